-- Commit one transition of a workflow run atomically, if nobody committed since it was read.
--
-- KEYS[1]  <ns>:run:<run_id>                 hash    doc, version, tenant, updated_at
-- KEYS[2]  <ns>:run:<run_id>:timeline        stream  what happened, for people
-- KEYS[3]  <ns>:run:<run_id>:events          stream  the events applied, for replay
-- KEYS[4]  <ns>:run:<run_id>:outbox          hash    command id -> command (JSON), until acknowledged
-- KEYS[5]  <ns>:outbox                       zset    run id -> time its outbox was last written
-- KEYS[6]  <ns>:wf:timers                    zset    "<run_id>|<timer_id>" -> due time
-- KEYS[7]  <ns>:runs:active                  set
-- KEYS[8]  <ns>:runs:active:<tenant>         set
-- ARGV[1]  expected version
-- ARGV[2]  new doc (JSON)
-- ARGV[3]  now
-- ARGV[4]  the event (JSON)
-- ARGV[5]  timeline entries (JSON array of objects with string values)
-- ARGV[6]  outbox commands (JSON array of [id, JSON])
-- ARGV[7]  timers to start (JSON array of [member, due])
-- ARGV[8]  timers to stop (JSON array of members)
-- ARGV[9]  "1" when the run ended
-- ARGV[10] TTL of an ended run's keys, seconds
-- ARGV[11] run id
--
-- Returns {"ok", new_version}, {"conflict", current_version} or {"missing", ""}.
local current = redis.call("HGET", KEYS[1], "version")
if not current then
  return {"missing", ""}
end
if current ~= ARGV[1] then
  return {"conflict", current}
end
local version = tostring(tonumber(current) + 1)
redis.call("HSET", KEYS[1], "doc", ARGV[2], "version", version, "updated_at", ARGV[3])
redis.call("XADD", KEYS[3], "*", "event", ARGV[4])
for _, entry in ipairs(cjson.decode(ARGV[5])) do
  local args = {}
  for k, v in pairs(entry) do
    args[#args + 1] = k
    args[#args + 1] = v
  end
  redis.call("XADD", KEYS[2], "*", unpack(args))
end
local commands = cjson.decode(ARGV[6])
for _, command in ipairs(commands) do
  redis.call("HSET", KEYS[4], command[1], command[2])
end
if #commands > 0 then
  redis.call("ZADD", KEYS[5], ARGV[3], ARGV[11])
end
for _, timer in ipairs(cjson.decode(ARGV[7])) do
  redis.call("ZADD", KEYS[6], timer[2], timer[1])
end
for _, member in ipairs(cjson.decode(ARGV[8])) do
  redis.call("ZREM", KEYS[6], member)
end
if ARGV[9] == "1" then
  redis.call("SREM", KEYS[7], ARGV[11])
  redis.call("SREM", KEYS[8], ARGV[11])
  local ttl = tonumber(ARGV[10])
  for i = 1, 3 do
    redis.call("EXPIRE", KEYS[i], ttl)
  end
end
return {"ok", version}
