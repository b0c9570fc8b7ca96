-- wrk script: KServe v2 JSON inference on an echo function with one BYTES element of 1 KiB.
--   wrk -t1 -c1 -d10s --latency -s perf/wrk/echo.lua http://127.0.0.1:8000
-- Environment: FERRY_MODEL (default "echo"), FERRY_INPUT (default "INPUT0"),
-- FERRY_PAYLOAD_BYTES (default 1024).
local model = os.getenv("FERRY_MODEL") or "echo"
local input = os.getenv("FERRY_INPUT") or "INPUT0"
local size = tonumber(os.getenv("FERRY_PAYLOAD_BYTES") or "1024")

wrk.method = "POST"
wrk.path = "/v2/models/" .. model .. "/infer"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"' .. input .. '","shape":[1],"datatype":"BYTES","data":["' ..
    string.rep("x", size) .. '"]}]}'
