#!/usr/bin/env python3
"""Generate config.schema.json (the plugin config's JSON Schema).

    python3 tests/schema/gen_schema.py > config.schema.json

Edit this file, not the JSON: the case-insensitive patterns (reserved
header names, SameSite values) and the shared limits are written once here.
tests/schema/test_config_schema.py checks that the committed
config.schema.json is this script's output and that both agree with
src/config.rs and src/compile.rs.
"""

import json
import sys

def ci(word):
    """Case-insensitive regex fragment for an ASCII word."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else ("\\" + c if c == "." else c) for c in word)

TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$"
RESERVED = ["cookie", "set-cookie", "host", "connection", "content-length", "transfer-encoding", "te",
            "upgrade", "keep-alive", "proxy-connection", "x-forwarded-for", "x-request-id"]
RESERVED_PAT = "^(" + "|".join(ci(w) for w in RESERVED) + ")$"
COOKIE_PAT = "^" + ci("cookie") + "$"
NONE_PAT = "^" + ci("none") + "$"
SAMESITE_PAT = "^(" + "|".join(ci(w) for w in ["none", "lax", "strict"]) + ")$"
VERSION_NAME = "^[A-Za-z0-9._-]{1,64}$"
RFC3339 = "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
LAST = "AEIMQUYcgkosw048"  # base64 chars whose low 2 bits are zero: the 43rd char of 32 bytes
SECRET = ("^\\s*([A-Za-z0-9+/]{42}[" + LAST + "]={0,2}|[A-Za-z0-9_-]{42}[" + LAST + "])\\s*$")
MAX_TTL = 10 * 365 * 86400
U32 = 4294967295
U64 = 18446744073709551615

def one_or_many(desc, item_extra=None):
    item = {"type": "string", "minLength": 1}
    if item_extra:
        item.update(item_extra)
    return {
        "description": desc,
        "anyOf": [item, {"type": "array", "items": item}],
    }

schema = {
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "urn:sticky-canary:plugin-config",
  "title": "sticky-canary plugin configuration",
  "description": (
    "The JSON plugin configuration of the sticky-canary proxy-wasm filter (Envoy: the Wasm filter's "
    "`configuration` StringValue; Istio: WasmPlugin `pluginConfig`). Kept in step with src/config.rs "
    "and src/compile.rs by tests/schema. Checks that need two values at once (a rule naming an unknown "
    "version, weights adding up to more than weight_total, duplicate names, header name clashes, a ramp "
    "ending before it starts, regex syntax) are made by the filter only: see tests/schema/filter-only/. "
    "The filter treats a JSON null as an absent key; this schema does not allow nulls."
  ),
  "type": "object",
  "additionalProperties": False,
  "properties": {},
  "$defs": {},
}
D = schema["$defs"]

D["token"] = {"type": "string", "pattern": TOKEN, "description": "An RFC 7230 token: 1 to 128 of A-Z a-z 0-9 ! # $ % & ' * + - . ^ _ ` | ~"}
D["headerName"] = {
  "allOf": [{"$ref": "#/$defs/token"}, {"not": {"pattern": RESERVED_PAT}}],
  "description": "A request header name (case-insensitive, written lowercase). Not one Envoy or the filter manages: cookie, set-cookie, host, connection, content-length, transfer-encoding, te, upgrade, keep-alive, proxy-connection, x-forwarded-for, x-request-id.",
}
D["weight"] = {"type": "integer", "minimum": 0, "maximum": 1000000,
  "description": "A share of weight_total (at most weight_total, which is at most 1000000)."}
D["rampTime"] = {
  "description": "An RFC 3339 time (`2026-11-21T10:00:00Z`, `2026-11-21T12:00:00+02:00`) or Unix seconds.",
  "anyOf": [
    {"type": "string", "pattern": RFC3339},
    {"type": "integer", "minimum": 0, "maximum": U64},
  ],
}
D["ramp"] = {
  "type": "object",
  "description": "A timed ramp that moves the version's weight from `from` to `to` between `start` and `end` (or `start` + `duration`), computed from the proxy's clock. Give `end` or `duration`, not both.",
  "additionalProperties": False,
  "required": ["start", "to"],
  "properties": {
    "start": {"$ref": "#/$defs/rampTime", "description": "When the ramp starts: RFC 3339 (`2026-11-21T10:00:00Z`) or Unix seconds."},
    "end": {"$ref": "#/$defs/rampTime", "description": "When the ramp ends (after start): RFC 3339 or Unix seconds. Or give `duration`."},
    "duration": {"type": "integer", "minimum": 1, "maximum": U64, "description": "Length of the ramp in seconds (instead of `end`)."},
    "from": {"$ref": "#/$defs/weight", "default": 0, "description": "Weight before `start` (default 0). At most weight_total."},
    "to": {"$ref": "#/$defs/weight", "description": "Weight from `end` on. At most weight_total."},
    "steps": {"type": "integer", "minimum": 1, "maximum": 10000, "description": "Move in this many equal steps (1..=10000). Omit it to move smoothly, one weight unit at a time."},
  },
  "oneOf": [{"required": ["end"]}, {"required": ["duration"]}],
}
D["version"] = {
  "type": "object",
  "additionalProperties": False,
  "required": ["name"],
  "properties": {
    "name": {"type": "string", "pattern": VERSION_NAME,
             "description": "The version's name (1 to 64 of A-Z a-z 0-9 - _ .), written to the version header (x-canary-version) for the routes to match; unique among the versions."},
    "weight": {"$ref": "#/$defs/weight",
               "description": "Share of weight_total sent to this version by the weighted bucket. Required for every version but the first; the first (default) version takes what the others leave and may omit it (if given it must equal that remainder). Weights of the other versions may add up to at most weight_total."},
    "ramp": {"$ref": "#/$defs/ramp", "description": "A timed ramp instead of a fixed `weight` (not on the first version)."},
  },
}
D["firstVersion"] = {
  "allOf": [{"$ref": "#/$defs/version"}, {"not": {"required": ["ramp"]}}],
  "description": "The default (first) version: it takes what the others leave, so it cannot ramp and may omit its weight.",
}
D["otherVersion"] = {
  "allOf": [{"$ref": "#/$defs/version"}, {"oneOf": [{"required": ["weight"]}, {"required": ["ramp"]}]}],
  "description": "A non-default version: give `weight` or `ramp` (not both).",
}
D["versions"] = {
  "type": "array",
  "description": "The versions traffic is split between, 2 to 32; the first is the default (stable) version. Names must be unique.",
  "minItems": 2, "maxItems": 32,
  "prefixItems": [{"$ref": "#/$defs/firstVersion"}],
  "items": {"$ref": "#/$defs/otherVersion"},
}
D["rule"] = {
  "type": "object",
  "description": "An explicit targeting rule: exactly one of `header`, `cookie`, `query`. With `value`: that exact value selects `version`, other values fall through. With `regex` (header rules): a match selects `version`. With neither (header and cookie rules): `always` selects `version`, `never` the default version, other values fall through.",
  "additionalProperties": False,
  "required": ["version"],
  "properties": {
    "header": {"allOf": [{"$ref": "#/$defs/token"}, {"not": {"pattern": COOKIE_PAT}}],
               "description": "Request header to inspect (case-insensitive; not `cookie`: use a cookie rule). Cannot be one of the headers the filter writes."},
    "cookie": {"$ref": "#/$defs/token", "description": "Cookie to inspect."},
    "query": {"type": "string", "pattern": "^[^&=#]{1,128}$", "description": "Query parameter to inspect (1 to 128 characters, no & = #). Query rules need a `value`."},
    "value": {"type": "string", "minLength": 1, "maxLength": 256, "description": "Exact value that selects the version (1 to 256 characters); other values fall through."},
    "regex": {"type": "string", "maxLength": 1024, "description": "Regular expression on the header value, in regex-lite syntax (not ECMA 262, so only the filter checks its syntax), at most 1024 characters; header rules only. A match selects the version."},
    "version": {"type": "string", "pattern": VERSION_NAME, "description": "Name of the version the rule sends to; must be one of `versions`."},
  },
  "oneOf": [{"required": ["header"]}, {"required": ["cookie"]}, {"required": ["query"]}],
  "not": {"required": ["value", "regex"]},
  "dependentRequired": {"regex": ["header"], "query": ["value"]},
}
D["rules"] = {
  "type": "array",
  "description": "Explicit targeting, evaluated before the remembered version and the weighted bucket; first match wins. At the top level without `versions`, the rules are defaults for the route entries and are checked against each entry's versions.",
  "items": {"$ref": "#/$defs/rule"},
}
D["cookieFields"] = {
  "type": "object",
  "description": "The session cookie's name and attributes.",
  "additionalProperties": False,
  "properties": {
    "name": {"$ref": "#/$defs/token", "default": "sticky-canary", "description": "Cookie name, an RFC 6265 token (default `sticky-canary`)."},
    "path": {"type": "string", "pattern": "^/([ -:<-~]*[!-:<-~])?$", "maxLength": 256, "default": "/", "description": "`Path` attribute: starts with /, at most 256 characters, no `;` or control characters. Default `/`; in a route entry matched by exactly one literal path (one value of `path_exact`, `path_prefix` or `path_separated_prefix`, and no `path_regex`), that path, as ingress-nginx scopes its cookie to the location path (when neither the entry nor the top level sets a path)."},
    "domain": {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,253}$", "description": "`Domain` attribute (default: none, a host-only cookie)."},
    "max_age": {"type": "integer", "minimum": 1, "maximum": MAX_TTL, "description": "`Max-Age` in seconds, 1..=315360000 (default: none, a browser-session cookie)."},
    "expires": {"type": "integer", "minimum": 1, "maximum": MAX_TTL, "description": "Seconds from now for a legacy `Expires` attribute, 1..=315360000 (default: none)."},
    "secure": {"anyOf": [{"type": "boolean"}, {"const": "auto"}], "default": False, "description": "`Secure` attribute: true, false (default) or \"auto\" (only when the request came over HTTPS: `:scheme` or `x-forwarded-proto` is https, as ingress-nginx does). SameSite=None needs true or \"auto\"."},
    "http_only": {"type": "boolean", "default": True, "description": "`HttpOnly` attribute (default true)."},
    "same_site": {
      "description": "`SameSite` attribute: `None`, `Lax` or `Strict` (case-insensitive; default: not sent). `None` requires `secure: true`.",
      "anyOf": [{"enum": ["None", "Lax", "Strict"]}, {"type": "string", "pattern": SAMESITE_PAT}],
    },
    "same_site_none_compat": {"type": "boolean", "default": False, "description": "Omit `SameSite=None` for browsers known to reject it (default false); no effect with Lax, Strict or no SameSite (accepted, as ingress-nginx does)."},
  },
}
D["cookie"] = {
  "allOf": [
    {"$ref": "#/$defs/cookieFields"},
    {"if": {"required": ["same_site"], "properties": {"same_site": {"pattern": NONE_PAT}}},
     "then": {"required": ["secure"], "properties": {"secure": {"enum": [True, "auto"]}}}},
  ],
  "description": "The session cookie's name and attributes.",
}
D["keyFields"] = {
  "type": "object",
  "description": "Where the session key comes from (default: a random key kept in the session cookie).",
  "additionalProperties": False,
  "properties": {
    "from": {"enum": ["cookie", "header", "query", "client_ip"], "default": "cookie",
             "description": "`cookie`: a random key generated into the session cookie (default); `header`: a request header (e.g. a user id set by an auth layer); `query`: a query parameter; `client_ip`: the client address."},
    "name": {"type": "string", "minLength": 1, "maxLength": 128, "description": "Header or query parameter name (from `header` or `query` only). A header name must be a token other than `cookie` and not a header the filter writes."},
    "xff_trusted_hops": {"type": "integer", "minimum": 0, "maximum": 16, "default": 0, "description": "From `client_ip` only: how many trusted proxies append to X-Forwarded-For (0: Envoy's own client address)."},
  },
}
D["key"] = {
  "allOf": [
    {"$ref": "#/$defs/keyFields"},
    {"required": ["from"]},
    {"if": {"properties": {"from": {"const": "header"}}},
     "then": {"required": ["name"], "properties": {"name": {"allOf": [{"$ref": "#/$defs/token"}, {"not": {"pattern": COOKIE_PAT}}]}}}},
    {"if": {"properties": {"from": {"const": "query"}}}, "then": {"required": ["name"]}},
    {"if": {"properties": {"from": {"enum": ["cookie", "client_ip"]}}}, "then": {"not": {"required": ["name"]}}},
    {"if": {"not": {"properties": {"from": {"const": "client_ip"}}}}, "then": {"not": {"required": ["xff_trusted_hops"]}}},
  ],
  "description": "Where the session key comes from (default: a random key kept in the session cookie).",
}
D["secret"] = {"type": "string", "pattern": SECRET,
               "description": "Base64 (standard or URL-safe) of exactly 32 random bytes: `openssl rand -base64 32`."}
D["sessionFields"] = {
  "type": "object",
  "description": "The session: cookie, key source, lifetime, sealing keys and pinning mode.",
  "additionalProperties": False,
  "properties": {
    "cookie": {"$ref": "#/$defs/cookieFields"},
    "key": {"$ref": "#/$defs/keyFields"},
    "ttl": {"type": "integer", "minimum": 1, "maximum": MAX_TTL, "description": "Server-side lifetime of a session in seconds, 1..=315360000 (default: the cookie's `max_age`, else `expires`, else 86400)."},
    "mode": {"enum": ["balanced", "persistent"], "default": "balanced",
             "description": "`balanced` (default): a consistent hash on the sticky-hash header pins the user to a pod (RING_HASH or MAGLEV). `persistent`: the exact pod is recorded in the sealed cookie and written to the endpoint header for Envoy's override_host load balancing policy; needs `secrets` or `secrets_env`."},
    "secrets": {"type": "array", "maxItems": 8, "items": {"$ref": "#/$defs/secret"},
                "description": "Keys that seal the cookie (XChaCha20-Poly1305), at most 8: the first seals, all open (list a new key first to rotate). Empty or absent: plain cookies (balanced mode only)."},
    "secrets_env": {"type": "string", "minLength": 1, "pattern": "^[^=\\u0000]+$",
                    "description": "Instead of `secrets`: the name of an environment variable of the Wasm VM that holds the keys, comma-separated (Envoy: vm_config.environment_variables; Istio: WasmPlugin vmConfig.env), so they stay out of the plugin config."},
    "change_on_failure": {"type": "boolean", "default": True, "description": "Persistent mode only: re-pin to the pod that answered when the pinned one failed (default true)."},
  },
}
D["session"] = {
  "allOf": [
    {"$ref": "#/$defs/sessionFields"},
    {"properties": {"cookie": {"$ref": "#/$defs/cookie"}, "key": {"$ref": "#/$defs/key"}}},
    {"if": {"required": ["mode"], "properties": {"mode": {"const": "persistent"}}},
     "then": {"anyOf": [{"required": ["secrets"], "properties": {"secrets": {"minItems": 1}}},
                        {"required": ["secrets_env"]}]}},
    {"not": {"required": ["secrets", "secrets_env"]}},
    {"if": {"required": ["change_on_failure"]},
     "then": {"required": ["mode"], "properties": {"mode": {"const": "persistent"}}}},
  ],
  "description": "The session: cookie, key source, lifetime, sealing keys and pinning mode.",
}
D["headers"] = {
  "type": "object",
  "description": "Names of the request headers the filter writes for Envoy's routes and load balancers (three different names).",
  "additionalProperties": False,
  "properties": {
    "version": {"$ref": "#/$defs/headerName", "default": "x-canary-version", "description": "Version header (default `x-canary-version`): routes / VirtualService match it exactly against the version names."},
    "hash": {"$ref": "#/$defs/headerName", "default": "x-sticky-hash", "description": "Sticky-hash header, 16 hex digits (default `x-sticky-hash`): the route hash_policy / DestinationRule consistentHash.httpHeaderName."},
    "endpoint": {"$ref": "#/$defs/headerName", "default": "x-sticky-endpoint", "description": "Pinned-endpoint header `ip:port` for Envoy's override_host policy, persistent mode (default `x-sticky-endpoint`). The filter removes a client's copy."},
  },
}

common = {
  "versions": {"$ref": "#/$defs/versions"},
  "weight_total": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 100,
                   "description": "The sum that weights are shares of, 1..=1000000 (default 100)."},
  "rules": {"$ref": "#/$defs/rules"},
  "stickiness": {"enum": ["sticky", "legacy"], "default": "sticky",
                 "description": "`sticky` (default): remember the version a user was given in the session cookie. `legacy`: decide every request from the rules and the weighted bucket only."},
  "rollback": {"type": "boolean", "default": False,
               "description": "When a remembered version has weight 0: true moves its users back by weight at once; false (default) lets them stay until the cookie expires (drain)."},
  "seed": {"type": "string", "maxLength": 256, "default": "",
           "description": "Mixed into the bucket hash (at most 256 characters); change it to reshuffle who goes first."},
  "headers": {"$ref": "#/$defs/headers"},
  "filter_state": {"type": "boolean", "default": False,
                   "description": "Record the decision in Envoy's filter state for access logs and Istio's Telemetry CEL: `wasm.sticky_canary.version`, `.reason`, `.session`, and `.endpoint` in persistent mode (default false; two host calls per request)."},
  "debug_header": {"$ref": "#/$defs/token",
                   "description": "Name of a response header that explains the decision (route, version, reason, rule, cookie state, session event). Off unless set; it never carries secrets or endpoint addresses."},
}
top = dict(common)
top["session"] = {"$ref": "#/$defs/session"}
top["routes"] = {
  "type": "array",
  "description": "Per-route overrides, first match wins. Each entry is the top-level object with the entry's keys merged in (objects key by key, arrays and scalars replaced). Requests no entry matches use the top-level policy, or pass through when the top level has no `versions`.",
  "items": {"$ref": "#/$defs/routeEntry"},
}
top["on_invalid_config"] = {
  "enum": ["pass_through", "refuse"], "default": "pass_through",
  "description": "What the filter does when this config is invalid. `pass_through`: log and count it, keep serving the last good config of this plugin in this VM, or pass every request through when there is none. `refuse`: Envoy rejects the filter config (with ECDS and no earlier config, every request then gets 500). Top level only.",
}
schema["properties"] = top

entry_props = dict(common)
entry_props["session"] = {"$ref": "#/$defs/sessionFields",
  "description": "Merged into the top-level `session` key by key (checks that span keys, such as SameSite=None needing secure, are made on the merged result by the filter)."}
entry_props["name"] = {"type": "string", "minLength": 1, "maxLength": 64,
  "description": "Entry name for logs and metrics (`sticky_canary.<name>.*`), 1 to 64 characters, unique (default `routes[i]`)."}
entry_props["enabled"] = {"type": "boolean", "default": True,
  "description": "false: requests this entry matches pass through untouched; a disabled entry takes only name, match and enabled."}
entry_props["match"] = {"$ref": "#/$defs/match"}
D["routeEntry"] = {
  "type": "object",
  "description": "A per-route override: `match`, optional `name` and `enabled`, and any top-level key except `routes`.",
  "additionalProperties": False,
  "required": ["match"],
  "properties": entry_props,
  "if": {"required": ["enabled"], "properties": {"enabled": {"const": False}}},
  "then": {"propertyNames": {"enum": ["name", "match", "enabled"]}},
}
D["match"] = {
  "type": "object",
  "description": "What the entry matches; every field given must match (each field: one string or a list, any of). Give at least one non-empty field. The path fields read the `:path` without its query string and fragment.",
  "additionalProperties": False,
  "properties": {
    "route_name": one_or_many("Envoy route name (`xds.route_name`), exact, any of. In Istio, the VirtualService http route `name`."),
    "virtual_host": one_or_many("Envoy virtual host name (`xds.virtual_host_name`), exact, any of. In Istio, `<host>:<port>`."),
    "authority": one_or_many("`:authority` (Host) without port, case-insensitive, `*` wildcards (`*.example.com`), any of."),
    "path_exact": one_or_many("The path (`:path` without its query string and fragment) equals this, any of; starts with /, no ? or #. ingress-nginx's `Exact`.", {"pattern": "^/[^?#]*$"}),
    "path_prefix": one_or_many("`:path` string prefix, starting with /, any of: `/api` also matches `/apis` (the query string is not part of the path).", {"pattern": "^/"}),
    "path_separated_prefix": one_or_many("Whole path elements, as Envoy's `path_separated_prefix`, Gateway API's `PathPrefix` and ingress-nginx's `Prefix`: `/api` matches `/api`, `/api/` and `/api/x`, not `/apis`. Starts with /, no ? or #, and does not end with / (except `/` itself, which matches every path); any of.", {"pattern": "^/([^?#]*[^?#/])?$"}),
    "path_regex": one_or_many("A regex-lite pattern searched in the path (unanchored: use ^ and $), at most 1024 characters, any of. Only the filter checks its syntax. For ingress-nginx's `use-regex` paths, `(?i)^` + the path.", {"maxLength": 1024}),
  },
  "anyOf": [
    {"required": [k], "properties": {k: {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1}]}}}
    for k in ["route_name", "virtual_host", "authority", "path_exact", "path_prefix", "path_separated_prefix", "path_regex"]
  ],
}

json.dump(schema, sys.stdout, indent=2, ensure_ascii=False)
print()
