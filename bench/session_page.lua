-- wrk script: a teacher's session page (a session with its records and their students).
-- Environment: TOKEN (access token), SESSION_ID.
local token = os.getenv("TOKEN")
local session = os.getenv("SESSION_ID")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.body = '{"query":"query($id: ID!) { session(id: $id) { id date isActive course { code name } records { id status lateMinutes scannedAt timestamp student { id studentCode firstName lastName } } } }","variables":{"id":"' .. session .. '"}}'

local non200 = 0
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"') then non200 = non200 + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests, summary.errors.status + non200))
end
