-- wrk script: POSTs the GraphQL document in $SP_BENCH_QUERY_FILE with the
-- token in $SP_BENCH_TOKEN.
local file = assert(io.open(os.getenv("SP_BENCH_QUERY_FILE"), "r"))
local query = file:read("*a")
file:close()
local function escape(s)
  return (s:gsub('\\', '\\\\'):gsub('"', '\\"'):gsub('\n', '\\n'))
end
wrk.method = "POST"
wrk.body = '{"query":"' .. escape(query) .. '"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SP_BENCH_TOKEN")
