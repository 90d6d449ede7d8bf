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
  -- A paced run (for latency at a given rate): each connection waits this long between requests
  -- on average. The wait is drawn between half and one and a half times that, so that the
  -- connections drift apart like independent senders instead of arriving as one burst.
  local seeded = false
  function delay()
    if not seeded then
      math.randomseed(os.time() + tonumber(prefix:match("^(%d+)")))
      seeded = true
    end
    return delay_ms * (0.5 + math.random())
  end
end
