//! Bad configurations and their exact error messages.
//!
//! Every row is a whole plugin config and the full `Display` text of the
//! error `compile_json` returns: `invalid plugin config: <path> = <value>:
//! <reason>` (or `<path>: <reason>` when there is no value to show). The
//! messages are what an operator reads in Envoy's log, so they are pinned
//! exactly. All tests here are host-free and also run inside wasm32-wasip1.

// Test code: failing loudly is the point, and the tables of tuples are the
// tests. (clippy.toml's allow-*-in-tests covers #[test] functions only, not
// the helpers and tables beside them.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;

use common::{error, plugin};
use sticky_canary::compile_json;

/// (what the row checks, config, expected message)
const CASES: &[(&str, &str, &str)] = &[
    // ---- not a config at all -------------------------------------------
    ("invalid JSON", r#"{"versions": ["#,
     "invalid plugin config: $: not valid JSON: EOF while parsing a list at line 1 column 14"),
    ("trailing garbage", r#"{} x"#,
     "invalid plugin config: $: not valid JSON: trailing characters at line 1 column 4"),
    ("array instead of object", r#"[]"#,
     "invalid plugin config: $ = []: the plugin config must be a JSON object"),
    ("number instead of object", r#"42"#,
     "invalid plugin config: $ = 42: the plugin config must be a JSON object"),
    ("string instead of object", r#""versions""#,
     "invalid plugin config: $ = \"versions\": the plugin config must be a JSON object"),
    ("null instead of object", r#"null"#,
     "invalid plugin config: $ = null: the plugin config must be a JSON object"),
    // ---- unknown keys, top level and nested ------------------------------
    ("unknown top-level key", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"bogus":1}"#,
     "invalid plugin config: bogus = 1: unknown field `bogus`, expected one of `versions`, `weight_total`, `rules`, `stickiness`, `rollback`, `seed`, `session`, `headers`, `routes`, `filter_state`, `debug_header`, `on_invalid_config`"),
    ("unknown key in session.cookie", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"nmae":"x"}}}"#,
     "invalid plugin config: session.cookie.nmae = \"x\": unknown field `nmae`, expected one of `name`, `path`, `domain`, `max_age`, `expires`, `secure`, `http_only`, `same_site`, `same_site_none_compat`"),
    ("unknown key in a version", r#"{"versions":[{"name":"v1"},{"name":"v2","wieght":10}]}"#,
     "invalid plugin config: versions[1].wieght = 10: unknown field `wieght`, expected one of `name`, `weight`, `ramp`"),
    ("unknown key in a rule", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"x-a","version":"v2","values":"x"}]}"#,
     "invalid plugin config: rules[0].values = \"x\": unknown field `values`, expected one of `header`, `cookie`, `query`, `value`, `regex`, `version`"),
    ("unknown key in a ramp", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":0,"duration":10,"to":10,"form":0}}]}"#,
     "invalid plugin config: versions[1].ramp.form = 0: unknown field `form`, expected one of `start`, `end`, `duration`, `from`, `to`, `steps`"),
    ("unknown key in a route match", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path":"/a"}}]}"#,
     "invalid plugin config: routes[0].match.path = \"/a\": unknown field `path`, expected one of `route_name`, `virtual_host`, `authority`, `path_exact`, `path_prefix`, `path_separated_prefix`, `path_regex`"),
    ("on_invalid_config unknown value", r#"{"on_invalid_config":"ignore","versions":[{"name":"v1"},{"name":"v2","weight":10}]}"#,
     "invalid plugin config: on_invalid_config = \"ignore\": unknown variant `ignore`, expected `pass_through` or `refuse`"),
    ("on_invalid_config in a route entry", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_prefix":"/a"},"on_invalid_config":"refuse"}]}"#,
     "invalid plugin config: routes[0].on_invalid_config: only at the top level: it applies to the whole plugin config"),
    ("secure neither bool nor auto", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"secure":"yes"}}}"#,
     "invalid plugin config: session.cookie.secure = \"yes\": invalid value: string \"yes\", expected true, false or \"auto\""),
    ("route entry named global", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"name":"global","match":{"path_prefix":"/a"}}]}"#,
     "invalid plugin config: routes[0].name = \"global\": 1 to 64 characters of A-Z a-z 0-9 - _ . (it labels the metrics), not \"global\" (the top-level policy's label)"),
    ("route entry name with a semicolon", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"name":"a;b","match":{"path_prefix":"/a"}}]}"#,
     "invalid plugin config: routes[0].name = \"a;b\": 1 to 64 characters of A-Z a-z 0-9 - _ . (it labels the metrics), not \"global\" (the top-level policy's label)"),
    ("authority with a port", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"authority":"shop.example.com:8080"}}]}"#,
     "invalid plugin config: routes[0].match.authority = \"shop.example.com:8080\": authority patterns match the host without its port: drop the port"),
    ("ramp before 1970", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":"1969-12-31T00:00:00Z","duration":60,"to":10}}]}"#,
     "invalid plugin config: versions[1].ramp.start = \"1969-12-31T00:00:00Z\": before 1970: ramps start after 1970-01-01T00:00:00Z"),
    ("debug header that is set-cookie", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"debug_header":"Set-Cookie"}"#,
     "invalid plugin config: debug_header = \"Set-Cookie\": not a usable response header name"),
    ("__Host- cookie without Secure", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"name":"__Host-sc"}}}"#,
     "invalid plugin config: session.cookie.name = \"__Host-sc\": a __Secure- or __Host- cookie needs \"secure\": true (browsers drop it otherwise)"),
    ("__Host- cookie with a path", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"name":"__Host-sc","secure":true,"path":"/app"}}}"#,
     "invalid plugin config: session.cookie.name = \"__Host-sc\": a __Host- cookie needs path \"/\" and no domain (browsers drop it otherwise)"),
    ("cookie path ending in a space", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"path":"/app "}}}"#,
     "invalid plugin config: session.cookie.path = \"/app \": must start with / and hold no ; or control characters, nor end in a space (browsers trim it)"),
    ("unknown key in a route entry", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_prefix":"/a"},"verisons":[]}]}"#,
     "invalid plugin config: routes[0].verisons = []: unknown field `verisons`, expected one of `versions`, `weight_total`, `rules`, `stickiness`, `rollback`, `seed`, `session`, `headers`, `routes`, `filter_state`, `debug_header`, `on_invalid_config`"),
    ("unknown key nested in a route entry", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_prefix":"/a"},"session":{"bogus":1}}]}"#,
     "invalid plugin config: routes[0].session.bogus = 1: unknown field `bogus`, expected one of `cookie`, `key`, `ttl`, `mode`, `secrets`, `secrets_env`, `change_on_failure`"),
    // ---- types -----------------------------------------------------------
    ("negative weight", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":-1}]}"#,
     "invalid plugin config: versions[1].weight = -1: invalid value: integer `-1`, expected u32"),
    ("fractional weight", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10.5}]}"#,
     "invalid plugin config: versions[1].weight = 10.5: invalid type: floating point `10.5`, expected u32"),
    ("versions as an object", r#"{"versions":{"name":"v1"}}"#,
     "invalid plugin config: versions = {\"name\":\"v1\"}: invalid type: map, expected a sequence"),
    ("version without a name", r#"{"versions":[{"name":"v1"},{"weight":10}]}"#,
     "invalid plugin config: versions[1] = {\"weight\":10}: missing field `name`"),
    ("bad stickiness", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"stickiness":"sometimes"}"#,
     "invalid plugin config: stickiness = \"sometimes\": unknown variant `sometimes`, expected `sticky` or `legacy`"),
    ("bad session mode", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"mode":"sticky"}}"#,
     "invalid plugin config: session.mode = \"sticky\": unknown variant `sticky`, expected `balanced` or `persistent`"),
    // ---- versions and weights --------------------------------------------
    ("one version only", r#"{"versions":[{"name":"v1"}]}"#,
     "invalid plugin config: versions = <1 version(s)>: name at least two versions; the first is the default"),
    ("no versions", r#"{"versions":[]}"#,
     "invalid plugin config: versions = <0 version(s)>: name at least two versions; the first is the default"),
    ("duplicate version", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10},{"name":"v2","weight":10}]}"#,
     "invalid plugin config: versions[2].name = \"v2\": clashes with version \"v2\""),
    ("bad version name", r#"{"versions":[{"name":"v1"},{"name":"v 2","weight":10}]}"#,
     "invalid plugin config: versions[1].name = \"v 2\": 1 to 64 characters of A-Z a-z 0-9 - _ ."),
    ("non-default version without weight", r#"{"versions":[{"name":"v1"},{"name":"v2"}]}"#,
     "invalid plugin config: versions[1].weight: missing (only the default, first, version may omit its weight)"),
    ("one weight over the total", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":101}]}"#,
     "invalid plugin config: versions[1].weight = 101: over weight_total 100"),
    ("weights add up over the total", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":60},{"name":"v3","weight":50}]}"#,
     "invalid plugin config: versions = <weights add up to 110>: weights are over weight_total 100"),
    ("weights over a custom total", r#"{"weight_total":10,"versions":[{"name":"v1"},{"name":"v2","weight":6},{"name":"v3","weight":5}]}"#,
     "invalid plugin config: versions = <weights add up to 11>: weights are over weight_total 10"),
    ("default weight mismatch", r#"{"versions":[{"name":"v1","weight":80},{"name":"v2","weight":10}]}"#,
     "invalid plugin config: versions[0].weight = 80: the default version takes what the others leave (90 of 100); give 90 or omit it"),
    ("weight_total 0", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":0}],"weight_total":0}"#,
     "invalid plugin config: weight_total = 0: must be 1..=1000000"),
    ("weight_total too large", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"weight_total":1000001}"#,
     "invalid plugin config: weight_total = 1000001: must be 1..=1000000"),
    ("seed too long", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"seed":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
     "invalid plugin config: seed = \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...: at most 256 characters"),
    // ---- rules -----------------------------------------------------------
    ("unknown version in a rule", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"x-a","version":"v9"}]}"#,
     "invalid plugin config: rules[0].version = \"v9\": unknown version; known: \"v1\", \"v2\""),
    ("bad regex", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"x-a","regex":"(","version":"v2"}]}"#,
     "invalid plugin config: rules[0].regex = \"(\": bad regex: found open group without closing ')'"),
    ("regex too big once compiled", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"x-a","regex":"a{1000}{1000}","version":"v2"}]}"#,
     "invalid plugin config: rules[0].regex = \"a{1000}{1000}\": bad regex: compiled regex exceeded size limit"),
    ("regex on a cookie rule", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"cookie":"c","regex":"^a","version":"v2"}]}"#,
     "invalid plugin config: rules[0].regex = \"^a\": regex applies to header rules only"),
    ("value and regex", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"x-a","value":"a","regex":"^a","version":"v2"}]}"#,
     "invalid plugin config: rules[0].regex: give value or regex, not both"),
    ("empty value", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"x-a","value":"","version":"v2"}]}"#,
     "invalid plugin config: rules[0].value = \"\": must be 1 to 256 characters"),
    ("two sources in a rule", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"x-a","cookie":"c","version":"v2"}]}"#,
     "invalid plugin config: rules[0] = {...}: give exactly one of header, cookie, query"),
    ("no source in a rule", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"version":"v2"}]}"#,
     "invalid plugin config: rules[0] = {...}: give exactly one of header, cookie, query"),
    ("query rule without value", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"query":"q","version":"v2"}]}"#,
     "invalid plugin config: rules[0].value: query rules need a value"),
    ("bad query parameter name", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"query":"a=b","value":"1","version":"v2"}]}"#,
     "invalid plugin config: rules[0].query = \"a=b\": not a valid query parameter name"),
    ("bad cookie name in a rule", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"cookie":"a;b","version":"v2"}]}"#,
     "invalid plugin config: rules[0].cookie = \"a;b\": not a valid cookie name"),
    ("bad header name in a rule", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"x a","version":"v2"}]}"#,
     "invalid plugin config: rules[0].header = \"x a\": not a valid request header name (use a cookie rule for cookies)"),
    ("header rule on Cookie", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"Cookie","version":"v2"}]}"#,
     "invalid plugin config: rules[0].header = \"Cookie\": not a valid request header name (use a cookie rule for cookies)"),
    ("rule reads a header the filter writes", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"X-Canary-Version","version":"v2"}]}"#,
     "invalid plugin config: rules[0].header = \"x-canary-version\": rules cannot read a header the filter itself writes"),
    ("second rule is the bad one", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"rules":[{"header":"x-a","version":"v2"},{"cookie":"c","version":"v3"}]}"#,
     "invalid plugin config: rules[1].version = \"v3\": unknown version; known: \"v1\", \"v2\""),
    // ---- cookie ----------------------------------------------------------
    ("bad cookie name", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"name":"bad name"}}}"#,
     "invalid plugin config: session.cookie.name = \"bad name\": not a valid cookie name (RFC 6265 token)"),
    ("empty cookie name", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"name":""}}}"#,
     "invalid plugin config: session.cookie.name = \"\": not a valid cookie name (RFC 6265 token)"),
    ("SameSite=None without Secure", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"same_site":"None"}}}"#,
     "invalid plugin config: session.cookie.same_site = \"None\": SameSite=None requires \"secure\": true or \"auto\" (browsers drop it otherwise)"),
    ("bad SameSite", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"same_site":"sometimes"}}}"#,
     "invalid plugin config: session.cookie.same_site = \"sometimes\": must be None, Lax or Strict"),
    ("Max-Age 0", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"max_age":0}}}"#,
     "invalid plugin config: session.cookie.max_age = 0: must be 1..=315360000 seconds"),
    ("Expires too far", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"expires":315360001}}}"#,
     "invalid plugin config: session.cookie.expires = 315360001: must be 1..=315360000 seconds"),
    ("relative cookie path", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"path":"app"}}}"#,
     "invalid plugin config: session.cookie.path = \"app\": must start with / and hold no ; or control characters, nor end in a space (browsers trim it)"),
    ("cookie path with ;", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"path":"/a;Domain=evil"}}}"#,
     "invalid plugin config: session.cookie.path = \"/a;Domain=evil\": must start with / and hold no ; or control characters, nor end in a space (browsers trim it)"),
    ("bad cookie domain", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"cookie":{"domain":"exa mple.com"}}}"#,
     "invalid plugin config: session.cookie.domain = \"exa mple.com\": not a valid cookie domain"),
    // ---- headers ---------------------------------------------------------
    ("bad version header name", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"headers":{"version":"x canary"}}"#,
     "invalid plugin config: headers.version = \"x canary\": not a usable request header name"),
    ("reserved hash header name", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"headers":{"hash":"Cookie"}}"#,
     "invalid plugin config: headers.hash = \"Cookie\": not a usable request header name"),
    ("endpoint header is Host", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"headers":{"endpoint":"host"}}"#,
     "invalid plugin config: headers.endpoint = \"host\": not a usable request header name"),
    ("two headers the same", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"headers":{"hash":"x-canary-version"}}"#,
     "invalid plugin config: headers = [\"x-canary-version\", \"x-canary-version\", \"x-sticky-endpoint\"]: the three header names must differ"),
    // ---- session: key source, secrets, mode ------------------------------
    ("persistent without secrets", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"mode":"persistent"}}"#,
     "invalid plugin config: session.mode = \"persistent\": persistent mode records the pod in the cookie and needs session.secrets (or secrets_env) to seal it"),
    ("change_on_failure in balanced mode", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"change_on_failure":false}}"#,
     "invalid plugin config: session.change_on_failure = false: only applies to session.mode \"persistent\""),
    ("secret of 30 bytes", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"secrets":["c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"]}}"#,
     "invalid plugin config: session.secrets[0] = <40 characters, not shown>: must be base64 of exactly 32 random bytes (openssl rand -base64 32)"),
    ("second secret not base64", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"secrets":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","hunter2!"]}}"#,
     "invalid plugin config: session.secrets[1] = <8 characters, not shown>: must be base64 of exactly 32 random bytes (openssl rand -base64 32)"),
    ("session ttl 0", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"ttl":0}}"#,
     "invalid plugin config: session.ttl = 0: must be 1..=315360000 seconds"),
    ("key from header without a name", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"key":{"from":"header"}}}"#,
     "invalid plugin config: session.key.name: key from header needs a name"),
    ("key from the Cookie header", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"key":{"from":"header","name":"Cookie"}}}"#,
     "invalid plugin config: session.key.name = \"cookie\": not a valid request header name"),
    ("key from a header the filter writes", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"key":{"from":"header","name":"x-sticky-hash"}}}"#,
     "invalid plugin config: session.key.name = \"x-sticky-hash\": the key cannot come from a header the filter itself writes"),
    ("unknown key source", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"key":{"from":"body"}}}"#,
     "invalid plugin config: session.key.from = \"body\": must be cookie, header, query or client_ip"),
    ("too many XFF hops", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"key":{"from":"client_ip","xff_trusted_hops":17}}}"#,
     "invalid plugin config: session.key.xff_trusted_hops = 17: must be 0..=16"),
    ("name with client_ip", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"key":{"from":"client_ip","name":"x"}}}"#,
     "invalid plugin config: session.key.name = \"x\": not used with from \"client_ip\""),
    ("XFF hops with a header key", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"key":{"from":"header","name":"x-user","xff_trusted_hops":1}}}"#,
     "invalid plugin config: session.key.xff_trusted_hops = 1: only applies with from \"client_ip\""),
    ("empty query key name", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"session":{"key":{"from":"query","name":""}}}"#,
     "invalid plugin config: session.key.name = \"\": not a valid query name"),
    // ---- ramps -----------------------------------------------------------
    ("ramp ends before it starts", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":"2027-01-15T08:00:00Z","end":"2027-01-15T07:00:00Z","to":50}}]}"#,
     "invalid plugin config: versions[1].ramp.end = 1799996400: must be after start (1800000000)"),
    ("ramp of zero duration", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":0,"duration":0,"to":50}}]}"#,
     "invalid plugin config: versions[1].ramp.duration = 0: must be at least 1 second"),
    ("ramp start not RFC 3339", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":"2027-01-15 08:00","duration":10,"to":50}}]}"#,
     "invalid plugin config: versions[1].ramp.start = \"2027-01-15 08:00\": not an RFC 3339 time such as 2026-11-21T10:00:00Z"),
    ("ramp end without offset", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":0,"end":"2027-01-15T08:00:00","to":50}}]}"#,
     "invalid plugin config: versions[1].ramp.end = \"2027-01-15T08:00:00\": not an RFC 3339 time such as 2026-11-21T10:00:00Z"),
    ("negative ramp start", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":-5,"duration":10,"to":50}}]}"#,
     "invalid plugin config: versions[1].ramp.start = -5: Unix seconds must be a whole number >= 0"),
    ("boolean ramp start", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":true,"duration":10,"to":50}}]}"#,
     "invalid plugin config: versions[1].ramp.start = true: an RFC 3339 string or Unix seconds"),
    ("ramp with end and duration", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":0,"end":10,"duration":10,"to":50}}]}"#,
     "invalid plugin config: versions[1].ramp.duration = 10: give end or duration, not both"),
    ("ramp without end or duration", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":0,"to":50}}]}"#,
     "invalid plugin config: versions[1].ramp.end: give end or duration"),
    ("ramp with 0 steps", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":0,"duration":10,"to":50,"steps":0}}]}"#,
     "invalid plugin config: versions[1].ramp.steps = 0: must be 1..=10000 (omit it for a smooth ramp)"),
    ("ramp to over the total", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":0,"duration":10,"to":101}}]}"#,
     "invalid plugin config: versions[1].ramp.to = 101: over weight_total 100"),
    ("ramp without to", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":0,"duration":10}}]}"#,
     "invalid plugin config: versions[1].ramp = {\"duration\":10,\"start\":0}: missing field `to`"),
    ("ramp on the default version", r#"{"versions":[{"name":"v1","ramp":{"start":0,"duration":10,"to":1}},{"name":"v2","weight":10}]}"#,
     "invalid plugin config: versions[0].ramp = {...}: the default (first) version takes what the others leave and cannot ramp"),
    ("ramp and weight", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10,"ramp":{"start":0,"duration":10,"to":1}}]}"#,
     "invalid plugin config: versions[1].weight = 10: a ramping version takes its weights from ramp.from and ramp.to"),
    ("ramps whose peaks add up over the total", r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":0,"duration":10,"to":60}},{"name":"v3","ramp":{"start":0,"duration":10,"from":50,"to":0}}]}"#,
     "invalid plugin config: versions = <weights add up to 110>: weights are over weight_total 100"),
    // ---- route entries ---------------------------------------------------
    ("routes not a list", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":{}}"#,
     "invalid plugin config: routes = {}: must be a list of route entries"),
    ("route entry not an object", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":["x"]}"#,
     "invalid plugin config: routes[0] = \"x\": a route entry must be a JSON object"),
    ("route entry without match", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"name":"a"}]}"#,
     "invalid plugin config: routes[0].match: every route entry needs a `match`"),
    ("empty match", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{}}]}"#,
     "invalid plugin config: routes[0].match = {}: give at least one of route_name, virtual_host, authority, path_exact, path_prefix, path_separated_prefix, path_regex"),
    ("path prefix without /", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_prefix":"a"}}]}"#,
     "invalid plugin config: routes[0].match.path_prefix = \"a\": a path prefix starts with /"),
    ("exact path without /", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_exact":"a"}}]}"#,
     "invalid plugin config: routes[0].match.path_exact = \"a\": a path starts with /"),
    ("exact path with a query", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_exact":"/a?b=1"}}]}"#,
     "invalid plugin config: routes[0].match.path_exact = \"/a?b=1\": the path is matched without its query string and fragment: drop the ? or # part"),
    ("separated prefix without /", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_separated_prefix":["/a","b"]}}]}"#,
     "invalid plugin config: routes[0].match.path_separated_prefix = \"b\": a path prefix starts with /"),
    ("separated prefix ending with /", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_separated_prefix":"/a/"}}]}"#,
     "invalid plugin config: routes[0].match.path_separated_prefix = \"/a/\": ends with /: a separated prefix matches whole path elements (\"/a\" matches /a, /a/ and /a/b, not /ab); for paths that must go on after the slash use path_prefix"),
    ("path regex that does not compile", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_regex":"^/(a"}}]}"#,
     "invalid plugin config: routes[0].match.path_regex = \"^/(a\": bad regex: found open group without closing ')'"),
    ("empty string in a match list", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_prefix":["/a",""]}}]}"#,
     "invalid plugin config: routes[0].match.path_prefix = \"\": empty strings match nothing"),
    ("nested routes", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_prefix":"/a"},"routes":[]}]}"#,
     "invalid plugin config: routes[0].routes = [...]: route entries cannot nest"),
    ("disabled entry with extra keys", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_prefix":"/a"},"enabled":false,"rollback":true}]}"#,
     "invalid plugin config: routes[0].rollback: a disabled route entry takes only name, match and enabled"),
    ("enabled not a boolean", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_prefix":"/a"},"enabled":"no"}]}"#,
     "invalid plugin config: routes[0].enabled = \"no\": must be true or false"),
    ("duplicate entry names", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"name":"x","match":{"path_prefix":"/a"}},{"name":"x","match":{"path_prefix":"/b"}}]}"#,
     "invalid plugin config: routes[1].name = \"x\": duplicate route entry name"),
    ("empty entry name", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"name":"","match":{"path_prefix":"/a"}}]}"#,
     "invalid plugin config: routes[0].name = \"\": 1 to 64 characters of A-Z a-z 0-9 - _ . (it labels the metrics), not \"global\" (the top-level policy's label)"),
    ("route entry without versions anywhere", r#"{"routes":[{"match":{"path_prefix":"/a"}}]}"#,
     "invalid plugin config: routes[0].versions: no versions here nor globally (use \"enabled\": false to pass a route through)"),
    ("route override over the total", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_prefix":"/a"},"versions":[{"name":"v1"},{"name":"v2","weight":200}]}]}"#,
     "invalid plugin config: routes[0].versions[1].weight = 200: over weight_total 100"),
    ("merged route cookie breaks a rule", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":10}],"routes":[{"match":{"path_prefix":"/a"},"session":{"cookie":{"same_site":"None"}}}]}"#,
     "invalid plugin config: routes[0].session.cookie.same_site = \"None\": SameSite=None requires \"secure\": true or \"auto\" (browsers drop it otherwise)"),
    ("global rule unknown to a route's versions", r#"{"rules":[{"header":"x-a","version":"v2"}],"routes":[{"match":{"path_prefix":"/a"},"versions":[{"name":"blue"},{"name":"green","weight":10}]}]}"#,
     "invalid plugin config: routes[0].rules[0].version = \"v2\": unknown version; known: \"blue\", \"green\""),
    ("bad global setting without global versions", r#"{"session":{"cookie":{"name":"bad name"}}}"#,
     "invalid plugin config: session.cookie.name = \"bad name\": not a valid cookie name (RFC 6265 token)"),
    ("key query name that can never match", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":1}],"session":{"key":{"from":"query","name":"a=b"}}}"#,
     "invalid plugin config: session.key.name = \"a=b\": not a valid query parameter name"),
    ("secrets and secrets_env", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":1}],"session":{"secrets":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],"secrets_env":"X"}}"#,
     "invalid plugin config: session.secrets_env = \"X\": give secrets or secrets_env, not both"),
    ("secrets_env not set", r#"{"versions":[{"name":"v1"},{"name":"v2","weight":1}],"session":{"secrets_env":"STICKY_CANARY_TEST_UNSET_VARIABLE"}}"#,
     "invalid plugin config: session.secrets_env = \"STICKY_CANARY_TEST_UNSET_VARIABLE\": the environment variable is not set in the Wasm VM (Envoy: vm_config.environment_variables; Istio: WasmPlugin vmConfig.env)"),
    ("global rules and no versions anywhere", r#"{"rules":[{"header":"x a","regex":"(","version":"v9"}]}"#,
     "invalid plugin config: rules = [...]: rules need versions: set `versions` here or in a route entry"),
];

#[test]
fn bad_configs_have_exact_messages() {
    assert!(
        CASES.len() >= 25,
        "the table must hold at least 25 bad configs"
    );
    let mut failures = Vec::new();
    for (what, config, want) in CASES {
        match compile_json(config) {
            Ok(_) => failures.push(format!("{what}: compiled, expected {want}")),
            Err(e) => {
                let got = e.to_string();
                if got != *want {
                    failures.push(format!("{what}:\n   got: {got}\n  want: {want}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows wrong:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn error_fields_split_path_value_reason() {
    let e = compile_json(r#"{"versions":[{"name":"v1"},{"name":"v2","weight":101}]}"#).unwrap_err();
    assert_eq!(e.path, "versions[1].weight");
    assert_eq!(e.value, "101");
    assert_eq!(e.reason, "over weight_total 100");
    // No value: the `= <value>` part is left out.
    let e = compile_json(r#"{"routes":[{"name":"a"}]}"#).unwrap_err();
    assert_eq!((e.path.as_str(), e.value.as_str()), ("routes[0].match", ""));
    assert_eq!(
        e.to_string(),
        "invalid plugin config: routes[0].match: every route entry needs a `match`"
    );
}

#[test]
fn long_values_are_cut_at_120_characters() {
    let name = "é".repeat(100); // 200 bytes: the cut must land on a char boundary
    let e = error(&format!(
        r#"{{"versions":[{{"name":"v1"}},{{"name":"{name}","weight":1}}]}}"#
    ));
    let value = e.split(" = ").nth(1).unwrap().split(": ").next().unwrap();
    assert!(value.ends_with("..."), "{value}");
    assert!(value.len() <= 120, "{} bytes", value.len());
}

/// A real-looking secret: base64 of 32 bytes.
const SECRET: &str = "c3VwZXItc2VjcmV0LWtleS1kby1ub3QtbG9nLWl0ISE=";

#[test]
fn a_bad_secret_is_never_echoed() {
    // Wrong length (31 bytes), bad alphabet, padding abuse: the message says
    // how long the value was, never what it was.
    let thirty_one = "c3VwZXItc2VjcmV0LWtleS1kby1ub3QtbG9nLWl0IQ==";
    for bad in [
        thirty_one,
        "!!not base64 at all!!",
        "c3VwZXItc2VjcmV0LWtleS1kby1ub3QtbG9nLWl0ISE===",
    ] {
        let e = error(&format!(
            r#"{{"versions":[{{"name":"v1"}},{{"name":"v2","weight":10}}],"session":{{"secrets":["{SECRET}","{bad}"]}}}}"#
        ));
        assert!(!e.contains(bad), "{e}");
        assert!(!e.contains(SECRET), "{e}");
        assert!(
            e.starts_with("invalid plugin config: session.secrets[1] = <"),
            "{e}"
        );
        assert!(
            e.contains(&format!("<{} characters, not shown>", bad.len())),
            "{e}"
        );
    }
    // The same inside a route entry.
    let e = error(&format!(
        r#"{{"versions":[{{"name":"v1"}},{{"name":"v2","weight":10}}],"routes":[{{"match":{{"path_prefix":"/a"}},"session":{{"secrets":["{thirty_one}"]}}}}]}}"#
    ));
    assert_eq!(
        e,
        "invalid plugin config: routes[0].session.secrets[0] = <44 characters, not shown>: must be base64 of exactly 32 random bytes (openssl rand -base64 32)"
    );
    // The good secret itself compiles.
    plugin(&format!(
        r#"{{"versions":[{{"name":"v1"}},{{"name":"v2","weight":10}}],"session":{{"secrets":["{SECRET}"]}}}}"#
    ));
}

#[test]
fn secret_as_a_string_is_not_echoed() {
    let e = error(&format!(
        r#"{{"versions":[{{"name":"v1"}},{{"name":"v2","weight":10}}],"session":{{"secrets":"{SECRET}"}}}}"#
    ));
    assert!(
        e.starts_with("invalid plugin config: session.secrets"),
        "{e}"
    );
    assert!(!e.contains(SECRET), "the secret leaks into the log: {e}");
}

#[test]
fn secret_under_a_misspelt_key_is_not_echoed() {
    for config in [
        format!(
            r#"{{"versions":[{{"name":"v1"}},{{"name":"v2","weight":10}}],"session":{{"secret":["{SECRET}"]}}}}"#
        ),
        format!(
            r#"{{"versions":[{{"name":"v1"}},{{"name":"v2","weight":10}}],"sesion":{{"secrets":["{SECRET}"]}}}}"#
        ),
        format!(
            r#"{{"versions":[{{"name":"v1"}},{{"name":"v2","weight":10}}],"routes":[{{"match":{{"path_prefix":"/a"}},"sesion":{{"secrets":["{SECRET}"]}}}}]}}"#
        ),
    ] {
        let e = error(&config);
        assert!(e.contains("unknown field"), "{e}");
        assert!(!e.contains(SECRET), "the secret leaks into the log: {e}");
    }
}

/// Configs that must compile: the edges of each rule above.
#[test]
fn edge_configs_compile() {
    for config in [
        "",
        "   ",
        "{}",
        r#"{"routes":null}"#,
        // weights at the limits
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":0}]}"#,
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":100}]}"#,
        r#"{"versions":[{"name":"v1","weight":0},{"name":"v2","weight":100}]}"#,
        r#"{"versions":[{"name":"v1","weight":90},{"name":"v2","weight":10}]}"#,
        r#"{"weight_total":1,"versions":[{"name":"v1"},{"name":"v2","weight":1}]}"#,
        r#"{"weight_total":1000000,"versions":[{"name":"v1"},{"name":"v2","weight":1}]}"#,
        // crossing ramps whose peaks fit
        r#"{"versions":[{"name":"v1"},{"name":"v2","ramp":{"start":0,"duration":10,"to":50}},{"name":"v3","ramp":{"start":0,"duration":10,"from":50,"to":0}}]}"#,
        // SameSite None + Secure + compat
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":1}],"session":{"cookie":{"same_site":"none","secure":true,"same_site_none_compat":true}}}"#,
        // global rules without global versions are defaults for the entries
        r#"{"rules":[{"header":"x-a","version":"v2"}],"routes":[{"match":{"path_prefix":"/a"},"versions":[{"name":"v1"},{"name":"v2","weight":1}]}]}"#,
        // a disabled entry needs no versions anywhere
        r#"{"routes":[{"name":"off","match":{"route_name":"r"},"enabled":false}]}"#,
        // persistent with a secret; padding optional; url alphabet accepted
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":1}],"session":{"mode":"persistent","secrets":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}}"#,
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":1}],"session":{"secrets":["__________________________________________w"]}}"#,
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":1}],"session":{"key":{"from":"client_ip","xff_trusted_hops":16}}}"#,
    ] {
        if let Err(e) = compile_json(config) {
            panic!("{config:?} should compile: {e}");
        }
    }
}
