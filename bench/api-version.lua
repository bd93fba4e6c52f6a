-- wrk script: the app's cheapest authenticated query.
wrk.method = "POST"
wrk.body = '{"query":"{ api { version } }"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SP_BENCH_TOKEN")
