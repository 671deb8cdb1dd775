-- wrk script for bench/webhook_bench.sh: one commercetools CustomerCreated message per
-- request, each with its own message id, customer id, email and phone (every request is a
-- new record, not a duplicate). In the template (first argument after --), the words
-- MSGID, CUSTID and PHONE are replaced by each request's own values.
local counter = 0
local template = nil
local threads = 0
local prefix = os.getenv("WEFT_BENCH_PREFIX") or "b"
-- Swedish mobile numbers, a different series per run (a shared phone is an identity conflict)
local series = os.getenv("WEFT_BENCH_PHONE_SERIES") or "70"

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  template = f:read("*a")
  f:close()
end

request = function()
  counter = counter + 1
  local id = prefix .. tid .. "-" .. counter
  local phone = string.format("+46%s%d%06d", series, tid, counter % 1000000)
  local body = template:gsub("MSGID", id):gsub("CUSTID", id):gsub("PHONE", phone)
  return wrk.format("POST", nil, nil, body)
end

-- Only 202 counts: anything else fails the run loudly.
local failures = 0
response = function(status, headers, body)
  if status ~= 202 then
    failures = failures + 1
    if failures <= 3 then io.stderr:write("unexpected answer " .. status .. ": " .. body .. "\n") end
  end
end
