-- wrk script: KServe v2 JSON inference on a wordfilter function, ten short text messages per
-- request (the "dirty word" filter job), some of them holding blacklisted words.
--   wrk -t1 -c32 -d10s --latency -s perf/wrk/wordfilter.lua http://127.0.0.1:8000
-- Environment: FERRY_MODEL (default "wordfilter"), FERRY_INPUT (default "text"),
-- FERRY_DOCS (messages per request, default 10).
local model = os.getenv("FERRY_MODEL") or "wordfilter"
local input = os.getenv("FERRY_INPUT") or "text"
local docs = tonumber(os.getenv("FERRY_DOCS") or "10")

local messages = {
  "hey, are we still meeting for lunch tomorrow at noon?",
  "that darn printer jammed again and ate my report",
  "Running late, traffic on the bridge is a total mess",
  "what the heck happened to the build last night",
  "Thanks for the help earlier, really appreciated it!",
  "drat, I forgot my badge at home again",
  "can you send me the slides from this morning's talk",
  "this blasted laptop will not connect to the wifi",
  "Happy birthday! Hope you have a great day",
  "the quarterly numbers look good, see the attached sheet",
}

local parts = {}
for i = 1, docs do
  parts[i] = '"' .. messages[(i - 1) % #messages + 1] .. '"'
end

wrk.method = "POST"
wrk.path = "/v2/models/" .. model .. "/infer"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"' .. input .. '","shape":[' .. docs ..
    '],"datatype":"BYTES","data":[' .. table.concat(parts, ",") .. ']}]}'
