//! The `versions` section: names, weights and timed ramps.

use super::error::{err, quoted, short_json, ConfigError};
use super::names::valid_version_name;
use crate::config::{RawRamp, RawVersion};
use crate::hash::fnv32;
use crate::policy::{Version, Weight};
use serde_json::Value;

pub(crate) fn compile_versions(
    raw: &[RawVersion],
    total: u32,
    p: &str,
) -> Result<Vec<Version>, ConfigError> {
    if raw.len() < 2 {
        return Err(err(
            format!("{p}versions"),
            format!("<{} version(s)>", raw.len()),
            "name at least two versions; the first is the default",
        ));
    }
    if raw.len() > 32 {
        return Err(err(
            format!("{p}versions"),
            format!("<{} versions>", raw.len()),
            "at most 32 versions",
        ));
    }
    let mut out: Vec<Version> = Vec::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        let vp = format!("{p}versions[{i}]");
        if !valid_version_name(&v.name) {
            return Err(err(
                format!("{vp}.name"),
                quoted(&v.name),
                "1 to 64 characters of A-Z a-z 0-9 - _ .",
            ));
        }
        let id = fnv32(v.name.as_bytes());
        if let Some(prev) = out.iter().find(|o| o.name == v.name || o.id == id) {
            return Err(err(
                format!("{vp}.name"),
                quoted(&v.name),
                format!("clashes with version {}", quoted(&prev.name)),
            ));
        }
        let weight = match (&v.ramp, v.weight) {
            (Some(_), Some(w)) => {
                return Err(err(
                    format!("{vp}.weight"),
                    w,
                    "a ramping version takes its weights from ramp.from and ramp.to",
                ))
            }
            (Some(r), None) => {
                if i == 0 {
                    return Err(err(
                        format!("{vp}.ramp"),
                        "{...}",
                        "the default (first) version takes what the others leave and cannot ramp",
                    ));
                }
                compile_ramp(r, total, &format!("{vp}.ramp"))?
            }
            (None, Some(w)) => {
                if w > total {
                    return Err(err(
                        format!("{vp}.weight"),
                        w,
                        format!("over weight_total {total}"),
                    ));
                }
                Weight::Fixed(w)
            }
            (None, None) if i == 0 => Weight::Fixed(0),
            (None, None) => {
                return Err(err(
                    format!("{vp}.weight"),
                    "",
                    "missing (only the default, first, version may omit its weight)",
                ))
            }
        };
        out.push(Version {
            name: v.name.clone(),
            id,
            weight,
        });
    }
    let others: u64 = out.iter().skip(1).map(|v| u64::from(v.weight.max())).sum();
    if others > u64::from(total) {
        return Err(err(
            format!("{p}versions"),
            format!("<weights add up to {others}>"),
            format!("weights are over weight_total {total}"),
        ));
    }
    if let Some(w) = raw.first().and_then(|v| v.weight) {
        let rest = u64::from(total) - others;
        if u64::from(w) != rest {
            return Err(err(
                format!("{p}versions[0].weight"),
                w,
                format!("the default version takes what the others leave ({rest} of {total}); give {rest} or omit it"),
            ));
        }
    }
    if let Some(first) = out.first_mut() {
        first.weight = Weight::Fixed(0);
    }
    Ok(out)
}

/// An RFC 3339 time (`2026-11-21T10:00:00Z`, offsets and fractions
/// allowed; a leap second is its minute's last second) as Unix seconds;
/// `None` if it is not one or is before 1970. How ramp times are read.
pub fn parse_time(s: &str) -> Option<u64> {
    u64::try_from(rfc3339_seconds(s)?).ok()
}

/// Seconds since 1970 of an RFC 3339 time (negative before 1970).
fn rfc3339_seconds(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z.
const LAST_RFC3339: u64 = 253_402_300_799;

/// Unix seconds as an RFC 3339 time in UTC, `2027-01-15T08:00:00Z`, the
/// form [`parse_time`] reads; capped at the end of year 9999, as cookie
/// dates are ([`crate::cookies::http_date`]).
///
/// ```
/// use sticky_canary::compile::{format_time, parse_time};
///
/// assert_eq!(format_time(1_800_000_000), "2027-01-15T08:00:00Z");
/// assert_eq!(parse_time(&format_time(1_800_000_000)), Some(1_800_000_000));
/// assert_eq!(format_time(u64::MAX), "9999-12-31T23:59:59Z");
/// ```
pub fn format_time(unix: u64) -> String {
    use time::format_description::well_known::Rfc3339;
    let secs = i64::try_from(unix.min(LAST_RFC3339)).unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn ramp_time(v: &Value, path: String) -> Result<u64, ConfigError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| err(path, n, "Unix seconds must be a whole number >= 0")),
        Value::String(s) => {
            let t = rfc3339_seconds(s).ok_or_else(|| {
                err(
                    path.clone(),
                    quoted(s),
                    "not an RFC 3339 time such as 2026-11-21T10:00:00Z",
                )
            })?;
            u64::try_from(t).map_err(|_| {
                err(
                    path,
                    quoted(s),
                    "before 1970: ramps start after 1970-01-01T00:00:00Z",
                )
            })
        }
        other => Err(err(
            path,
            short_json(other),
            "an RFC 3339 string or Unix seconds",
        )),
    }
}

fn compile_ramp(r: &RawRamp, total: u32, p: &str) -> Result<Weight, ConfigError> {
    let start = ramp_time(&r.start, format!("{p}.start"))?;
    let end = match (&r.end, r.duration) {
        (Some(e), None) => ramp_time(e, format!("{p}.end"))?,
        (None, Some(0)) => {
            return Err(err(format!("{p}.duration"), 0, "must be at least 1 second"))
        }
        (None, Some(d)) => start.saturating_add(d),
        (Some(_), Some(_)) => {
            return Err(err(
                format!("{p}.duration"),
                r.duration.unwrap_or(0),
                "give end or duration, not both",
            ))
        }
        (None, None) => return Err(err(format!("{p}.end"), "", "give end or duration")),
    };
    if end <= start {
        return Err(err(
            format!("{p}.end"),
            end,
            format!("must be after start ({start})"),
        ));
    }
    let from = r.from.unwrap_or(0);
    for (name, w) in [("from", from), ("to", r.to)] {
        if w > total {
            return Err(err(
                format!("{p}.{name}"),
                w,
                format!("over weight_total {total}"),
            ));
        }
    }
    let steps = r.steps.unwrap_or(0);
    if r.steps == Some(0) || steps > 10_000 {
        return Err(err(
            format!("{p}.steps"),
            steps,
            "must be 1..=10000 (omit it for a smooth ramp)",
        ));
    }
    Ok(Weight::Ramp {
        start,
        end,
        from,
        to: r.to,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::ramp_time;
    use serde_json::json;

    #[test]
    fn ramp_times() {
        let t = |v: serde_json::Value| ramp_time(&v, "t".into()).map_err(|e| e.reason);
        assert_eq!(t(json!("1970-01-01T00:00:00Z")), Ok(0));
        assert_eq!(t(json!("2026-11-21T10:00:00Z")), Ok(1_795_255_200));
        assert_eq!(t(json!("2026-11-21T11:00:00+01:00")), Ok(1_795_255_200));
        assert_eq!(t(json!("2026-11-21T10:00:00.250Z")), Ok(1_795_255_200));
        assert_eq!(t(json!("2024-02-29T00:00:00Z")), Ok(1_709_164_800));
        assert_eq!(t(json!(1_795_255_200u64)), Ok(1_795_255_200));
        // A leap second is the last second of its minute, not the next one.
        assert_eq!(t(json!("2016-12-31T23:59:60Z")), Ok(1_483_228_799));
        assert_eq!(
            t(json!("1969-12-31T23:59:59Z")),
            Err("before 1970: ramps start after 1970-01-01T00:00:00Z".into())
        );
        for bad in [
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-21",
            "2026-11-21T10:00:00",
            "2026-11-21T10:00:00+0100",
            "2026-11-21T25:00:00Z",
        ] {
            assert!(t(json!(bad)).is_err(), "{bad}");
        }
    }
}
