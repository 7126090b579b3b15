-- wrk script for bench/edge: POST /v1/sessions/{id}/commands, spreading the
-- requests over the sessions in the SESSIONS environment variable
-- (space-separated ids) with the token in TOKEN.
local sessions = {}
for id in string.gmatch(os.getenv("SESSIONS") or "", "%S+") do
	sessions[#sessions + 1] = id
end
local token = os.getenv("TOKEN")
local body = '{"type":"message","payload":{"text":"bench"}}'
local n = 0

request = function()
	n = n + 1
	local sid = sessions[(n % #sessions) + 1]
	return wrk.format("POST", "/v1/sessions/" .. sid .. "/commands", {
		["Authorization"] = "Bearer " .. token,
		["Content-Type"] = "application/json",
	}, body)
end

local statuses = {}
response = function(status, headers, body)
	statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
	io.write(string.format("RESULT rps=%.0f p50=%.2f p99=%.2f errors=%d non2xx=%d\n",
		summary.requests / (summary.duration / 1e6),
		latency:percentile(50) / 1000, latency:percentile(99) / 1000,
		summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
		summary.errors.status))
end
