-- wrk script for bench/run: POSTs bodies built from templates, one new set of messageIds per
-- request, with HTTP Basic auth; writes a JSON summary when wrk finishes.
--
-- Environment (set by bench/run):
--   BENCH_TEMPLATES  file with one template per line: "<path>\t<json body>"; every "@MID@" in
--                    the body is replaced by a messageId unique to this request and position
--   BENCH_AUTH       value of the Authorization header ("" for none)
--   BENCH_RUN        prefix of the generated messageIds (unique per run)
--   BENCH_RESULT     where done() writes its JSON summary
--   BENCH_RATE       optional: total requests/s to pace to (wrk's delay() hook); 0 = closed loop

local templates = {}
local file = assert(io.open(os.getenv("BENCH_TEMPLATES"), "rb"))
for line in file:lines() do
  local path, body = line:match("^([^\t]+)\t(.*)$")
  if path then
    local parts = {}
    local start = 1
    while true do
      local i, j = body:find("@MID@", start, true)
      if not i then break end
      parts[#parts + 1] = body:sub(start, i - 1)
      start = j + 1
    end
    parts[#parts + 1] = body:sub(start)
    templates[#templates + 1] = { path = path, parts = parts }
  end
end
file:close()
assert(#templates > 0, "no templates in BENCH_TEMPLATES")

local run = os.getenv("BENCH_RUN") or "bench"
local auth = os.getenv("BENCH_AUTH") or ""
local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "analytics-python/2.4.0"
if auth ~= "" then
  wrk.headers["Authorization"] = auth
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  threads[#threads + 1] = thread
end

local nxt = 1
local counter = 0
local buf = {}

function request()
  local t = templates[nxt]
  nxt = nxt % #templates + 1
  counter = counter + 1
  local prefix = run .. "-" .. tostring(tid) .. "-" .. counter .. "-"
  local parts = t.parts
  local n = #parts
  for k = 1, n - 1 do
    buf[2 * k - 1] = parts[k]
    buf[2 * k] = prefix .. k
  end
  buf[2 * n - 1] = parts[n]
  for k = 2 * n, #buf do buf[k] = nil end
  return wrk.format(nil, t.path, nil, table.concat(buf))
end

if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk, bench_timespec *tp);
  ]]
  local ts = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = 1000 / rate
  local slot = nil
  -- Each call hands out the next slot of one schedule shared by this thread's connections,
  -- so the thread sends `rate` requests/s whatever the latency (while connections are free).
  function delay()
    local now = now_ms()
    if slot == nil or slot < now - 1000 then slot = now end
    slot = slot + interval
    local wait = slot - now
    if wait < 0 then wait = 0 end
    return wait
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = assert(io.open(os.getenv("BENCH_RESULT"), "w"))
  out:write(string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "max": %d, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
  out:close()
end
