"""Every session-cookie attribute, as the real Envoy emits it."""

from __future__ import annotations

import email.utils
import time

import testkit

OLD_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/62.0.3202.94 Safari/537.36"
)
NEW_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


def test_all_cookie_attributes_and_same_site_compat(workdir, backends):
    """name, path, domain, Max-Age, Expires (now + seconds), Secure, HttpOnly,
    SameSite=None, and the conditional SameSite=None: dropped for a browser
    known to reject it (Chrome 51-66), sent to every other client."""
    plugin = {
        "versions": [{"name": "canary-v1"}, {"name": "canary-v2", "weight": 0}],
        "session": {
            "cookie": {
                "name": "sc",
                "path": "/app",
                "domain": "example.com",
                "max_age": 600,
                "expires": 7200,
                "secure": True,
                "http_only": True,
                "same_site": "None",
                "same_site_none_compat": True,
            }
        },
    }
    envoy = testkit.start_envoy(testkit.load_config(), workdir / "attrs", backends=backends, plugin=plugin)
    try:
        c = envoy.client()
        before = time.time()
        r = c.get("/app/x", headers={"user-agent": NEW_CHROME})
        after = time.time()
        [cookie] = r.cookies_named("sc")
        attrs = cookie.attribute_set
        expires = [a for a in attrs if a.startswith("Expires=")]
        assert attrs - set(expires) == {
            "Path=/app", "Domain=example.com", "Max-Age=600", "Secure", "HttpOnly", "SameSite=None",
        }
        # Expires is an IMF-fixdate 7200 s from now.
        [exp] = expires
        when = email.utils.parsedate_to_datetime(exp.split("=", 1)[1]).timestamp()
        assert exp.endswith(" GMT")
        assert int(before) + 7200 - 1 <= when <= after + 7200 + 1

        r = c.get("/app/x", headers={"user-agent": OLD_CHROME})
        [cookie] = r.cookies_named("sc")
        assert not any(a.startswith("SameSite") for a in cookie.attributes), cookie
        assert "Secure" in cookie.attribute_set
        c.close()
    finally:
        envoy.stop()


def test_lax_and_minimal_attributes(workdir, backends):
    """Defaults: Path=/ and HttpOnly only; SameSite=Lax when asked. A route
    entry matched by one path prefix scopes its cookie to that prefix (as
    ingress-nginx scopes it to the location path)."""
    plugin = {
        "versions": [{"name": "canary-v1"}, {"name": "canary-v2", "weight": 0}],
        "routes": [{"name": "lax", "match": {"path_prefix": "/lax"},
                    "session": {"cookie": {"name": "lax", "same_site": "Lax", "http_only": False}}}],
    }
    envoy = testkit.start_envoy(testkit.load_config(), workdir / "attrs-min", backends=backends, plugin=plugin)
    try:
        c = envoy.client()
        [cookie] = c.get("/").cookies_named("sticky-canary")
        assert cookie.attribute_set == {"Path=/", "HttpOnly"}
        [cookie] = c.get("/lax/1").cookies_named("lax")
        assert cookie.attribute_set == {"Path=/lax", "SameSite=Lax"}
        c.close()
    finally:
        envoy.stop()
