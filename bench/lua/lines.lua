-- Posts the lines of a file as request bodies, each line once (bodies that cannot be made from
-- a template, e.g. Pearson deliveries, each signed with its own MAC). Thread k of n sends the
-- lines whose index is k modulo n, so no two requests carry the same delivery.
-- Usage: wrk -t N -s bench/lua/lines.lua URL -- BODIES_FILE N
local threads = 0
local bodies = {}
local counter = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  local n = tonumber(args[2])
  local index = 0
  for line in io.lines(args[1]) do
    if index % n == tid then
      bodies[#bodies + 1] = line
    end
    index = index + 1
  end
end

function request()
  counter = counter + 1
  if counter > #bodies then
    -- Out of unique bodies: a repeat would be a duplicate and flatter the numbers.
    wrk.thread:stop()
  end
  return wrk.format("POST", nil, nil, bodies[((counter - 1) % #bodies) + 1])
end
