-- Posts a request body template with every "{{UNIQUE}}" replaced by an id unique to this request
-- (thread number, start time, request counter), so that no two requests carry the same events.
-- Usage: wrk -s bench/lua/unique.lua URL -- TEMPLATE_FILE
local threads = 0
local counter = 0
local template = nil

function setup(thread)
  threads = threads + 1
  thread:set("prefix", threads .. "-" .. os.time())
end

function init(args)
  local file = io.open(args[1], "r")
  template = file:read("*a")
  file:close()
end

function request()
  counter = counter + 1
  local body = template:gsub("{{UNIQUE}}", prefix .. "-" .. counter)
  return wrk.format("POST", nil, nil, body)
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms then
  -- A paced run (for latency at a given rate): each connection waits this long between requests.
  function delay()
    return delay_ms
  end
end
