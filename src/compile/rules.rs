//! The `rules` section: explicit targeting by header, cookie or query
//! parameter.

use super::error::{err, quoted, ConfigError};
use super::names::{is_query_name, is_readable_header, is_token};
use crate::config::RawRule;
use crate::policy::{Matcher, Rule, RuleSource, Version};
use regex_lite::Regex;

pub(crate) fn compile_rule(
    r: &RawRule,
    versions: &[Version],
    p: &str,
) -> Result<Rule, ConfigError> {
    let version = versions
        .iter()
        .position(|v| v.name == r.version)
        .ok_or_else(|| {
            err(
                format!("{p}.version"),
                quoted(&r.version),
                format!(
                    "unknown version; known: {}",
                    versions
                        .iter()
                        .map(|v| quoted(&v.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    let source = match (&r.header, &r.cookie, &r.query) {
        (Some(h), None, None) => {
            let name = h.to_ascii_lowercase();
            if !is_readable_header(&name) {
                return Err(err(
                    format!("{p}.header"),
                    quoted(h),
                    "not a valid request header name (use a cookie rule for cookies)",
                ));
            }
            RuleSource::Header(name)
        }
        (None, Some(c), None) => {
            if !is_token(c) {
                return Err(err(
                    format!("{p}.cookie"),
                    quoted(c),
                    "not a valid cookie name",
                ));
            }
            RuleSource::Cookie(c.clone())
        }
        (None, None, Some(q)) => {
            if !is_query_name(q) {
                return Err(err(
                    format!("{p}.query"),
                    quoted(q),
                    "not a valid query parameter name",
                ));
            }
            RuleSource::Query(q.clone())
        }
        _ => return Err(err(p, "{...}", "give exactly one of header, cookie, query")),
    };
    let matcher = match (&r.value, &r.regex) {
        (Some(_), Some(_)) => {
            return Err(err(
                format!("{p}.regex"),
                "",
                "give value or regex, not both",
            ))
        }
        (Some(v), None) => {
            if v.is_empty() || v.len() > 256 {
                return Err(err(
                    format!("{p}.value"),
                    quoted(v),
                    "must be 1 to 256 characters",
                ));
            }
            Matcher::Exact(v.clone())
        }
        (None, Some(re)) => {
            if !matches!(source, RuleSource::Header(_)) {
                return Err(err(
                    format!("{p}.regex"),
                    quoted(re),
                    "regex applies to header rules only",
                ));
            }
            if re.len() > 1024 {
                return Err(err(
                    format!("{p}.regex"),
                    quoted(re),
                    "at most 1024 characters",
                ));
            }
            let compiled = Regex::new(re)
                .map_err(|e| err(format!("{p}.regex"), quoted(re), format!("bad regex: {e}")))?;
            Matcher::Regex(compiled)
        }
        (None, None) => {
            if let RuleSource::Query(_) = source {
                return Err(err(format!("{p}.value"), "", "query rules need a value"));
            }
            Matcher::Sentinel
        }
    };
    Ok(Rule {
        source,
        matcher,
        version,
    })
}
