-- bench/wrk/webhook.lua at a fixed rate: each connection waits WEFT_BENCH_DELAY_MS between
-- its requests, so connections * 1000 / (delay + latency) requests/s.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "webhook.lua")
local wait = tonumber(os.getenv("WEFT_BENCH_DELAY_MS") or "10")
function delay() return wait end
