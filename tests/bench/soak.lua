-- wrk script for tests/bench/soak.py: mixed new and returning users.
-- Arguments (after `--`): the pool file (one "cookie version pod" line per
-- returning user), N: one request in N is a new user (no cookie), and the
-- session cookie's name.
-- The pods echo x-user and the filter's x-canary-version (as x-version)
-- and name themselves in x-pod, so every answer to a returning user is
-- checked against the version and pod that user had before the soak.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local cookies, versions, pods = {}, {}, {}
local n, new_every, counter, cookie_name = 0, 5, 0, "sticky-canary"
requests_sent, non200, mismatch, returning, new, new_without_cookie, reissued, unknown = 0, 0, 0, 0, 0, 0, 0, 0

function init(args)
  for line in io.lines(args[1]) do
    local c, v, p = line:match("^(%S+) (%S+) (%S+)$")
    if c then
      n = n + 1
      cookies[n], versions[n], pods[n] = c, v, p
    end
  end
  new_every = tonumber(args[2]) or 5
  cookie_name = args[3] or cookie_name
end

function request()
  counter = counter + 1
  if counter % new_every == 0 then
    return wrk.format("GET", "/", { ["x-user"] = "new" })
  end
  -- A stride through the pool, so consecutive requests are different users.
  local i = (counter * 7919) % n + 1
  return wrk.format("GET", "/", { ["x-user"] = tostring(i), ["Cookie"] = cookie_name .. "=" .. cookies[i] })
end

function response(status, headers, body)
  requests_sent = requests_sent + 1
  if status ~= 200 then
    non200 = non200 + 1
  end
  local u = headers["x-user"]
  if u == "new" then
    new = new + 1
    if headers["set-cookie"] == nil then
      new_without_cookie = new_without_cookie + 1
    end
  elseif u ~= nil and tonumber(u) ~= nil then
    local i = tonumber(u)
    returning = returning + 1
    if headers["x-version"] ~= versions[i] or headers["x-pod"] ~= pods[i] then
      mismatch = mismatch + 1
    end
    if headers["set-cookie"] ~= nil then
      reissued = reissued + 1
    end
  else
    unknown = unknown + 1
  end
end

function done(summary, latency, requests)
  local t = { non200 = 0, mismatch = 0, returning = 0, new = 0, new_without_cookie = 0, reissued = 0, unknown = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + thread:get(k)
    end
  end
  local e = summary.errors
  t.requests = summary.requests
  t.socket_errors = e.connect + e.read + e.write + e.timeout
  local parts = {}
  for k, v in pairs(t) do
    table.insert(parts, string.format('"%s": %d', k, v))
  end
  io.write("SOAK {" .. table.concat(parts, ", ") .. "}\n")
end
