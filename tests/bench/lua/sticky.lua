-- The job sticky-canary does, written as an Envoy Lua filter: the
-- benchmark's yardstick (tests/bench/instr.py, cases "lua" and "lua-new").
-- It is what a user would hand-write instead of the filter, kept simple:
--   * read the session cookie `sticky-canary` (its value is the session key);
--   * no cookie: make a random 128-bit key and Set-Cookie it on the response;
--   * FNV-1a (32-bit) of the key -> weight bucket 0..99; bucket < 10 -> v2;
--   * set x-canary-version and x-sticky-hash (the route re-matches on them).
-- No sealing, no rules, no expiry, no validation: cheaper than the filter's
-- job, so a comparison against it flatters Lua, not the filter.

local bit = require("bit")
local COOKIE = "sticky-canary"
local WEIGHT_V2 = 10

local function fnv1a(s)
  local h = 2166136261
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    -- h * 16777619 mod 2^32, exact in doubles: 16777619 = 2^24 + 403
    h = bit.tobit(h * 403 + bit.lshift(h, 24))
  end
  if h < 0 then h = h + 4294967296 end
  return h
end

local function session_key(cookie)
  if cookie == nil then return nil end
  local v = (";" .. cookie):match(";%s*" .. COOKIE:gsub("%-", "%%-") .. "=([0-9a-f]+)")
  if v ~= nil and #v == 32 then return v end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local key = session_key(headers:get("cookie"))
  if key == nil then
    key = string.format("%08x%08x%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff),
                        math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
    handle:streamInfo():dynamicMetadata():set("bench.sticky", "new", key)
  end
  local h = fnv1a(key)
  local version = "v1"
  if h % 100 < WEIGHT_V2 then version = "v2" end
  headers:replace("x-canary-version", version)
  headers:replace("x-sticky-hash", bit.tohex(h) .. bit.tohex(fnv1a(version .. key)))
end

function envoy_on_response(handle)
  local md = handle:streamInfo():dynamicMetadata():get("bench.sticky")
  if md ~= nil and md["new"] ~= nil then
    handle:headers():add("set-cookie", COOKIE .. "=" .. md["new"] .. "; Path=/; Max-Age=86400; HttpOnly")
  end
end
