-- Move a job to a new state if, and only if, the lifecycle allows it from the current one.
--
-- KEYS[1]  <ns>:job:<job_id>          hash    the job record
-- KEYS[2]  <ns>:job:<job_id>:events   stream  the job's append-only history
-- KEYS[3]  <ns>:jobs:undispatched      zset    job id -> since when it waits to reach a worker: a
--          move to PENDING, SCHEDULED or DISPATCHED (re)enters it (the dispatcher takes a job out
--          once its message is sent), any other move leaves it
-- KEYS[4]  <ns>:engine:job_news         stream  a run's job that ends (or waits for approval) is
--          announced here in the same step, for the workflow engine (store/job_news.py): job_id,
--          run_id and result_ptr, so the engine reads the job, its output and the run in one trip
-- ARGV[1]  target state
-- ARGV[2]  now (seconds since epoch, as a string)
-- ARGV[3]  reason recorded in the history
-- ARGV[4]  JSON array of the states the target may be entered from
-- ARGV[5]  JSON object of extra fields to set with the move (all values strings)
-- ARGV[6]  history MAXLEN
-- ARGV[7]  the attempt the move belongs to, or "" for any: a move for an older attempt (a late
--          result, a redelivered message) is refused as "stale"
-- ARGV[8]  for a move to DISPATCHED: JSON array of [active set key, limit or -1] -- the concurrency
--          sets the job joins (its tenant's, its actor's, its pool's); "" for any other move
-- ARGV[9]  job news MAXLEN
-- KEYS[5]  for a move to DISPATCHED on a Redis broker: the pool's queue (a list), and
-- ARGV[10] the attempt's message, pushed onto it with the move: DISPATCHED then means "sent", so
--          the job does not enter the undispatched set; "" (and any KEYS[5]) for every other move
--
-- Active sets (<ns>:active:tenant:<t>, <ns>:active:actor:<t>:<a>, <ns>:active:pool:<p>) hold job
-- ids while DISPATCHED or RUNNING. The limit checks and the move are one step, so concurrent
-- dispatchers can never exceed a limit; the record keeps the keys it joined (active_sets) and
-- every later move leaves them. (Keys named in a record: standalone Redis, as Coretex requires.)
--
-- Returns {"ok", previous} | {"same", current} | {"illegal", current} | {"stale", current}
--       | {"quota", set key, active count} | {"missing", ""}.
-- "same" applies nothing: a repeated result or a re-delivered message changes state once only.
local current = redis.call("HGET", KEYS[1], "state")
if not current then
  return {"missing", ""}
end
if ARGV[7] ~= "" and redis.call("HGET", KEYS[1], "attempts") ~= ARGV[7] then
  return {"stale", current}
end
if current == ARGV[1] then
  return {"same", current}
end
local allowed = false
for _, state in ipairs(cjson.decode(ARGV[4])) do
  if state == current then
    allowed = true
    break
  end
end
if not allowed then
  return {"illegal", current}
end
local job_id = redis.call("HGET", KEYS[1], "job_id")
local joining = {}
if ARGV[1] == "DISPATCHED" and ARGV[8] ~= "" then
  joining = cjson.decode(ARGV[8])
  for _, pair in ipairs(joining) do
    local limit = tonumber(pair[2])
    if limit >= 0 and redis.call("SISMEMBER", pair[1], job_id) == 0 then
      local running = redis.call("SCARD", pair[1])
      if running >= limit then
        return {"quota", pair[1], tostring(running)}
      end
    end
  end
end
local leaving = redis.call("HGET", KEYS[1], "active_sets")
local args = {"state", ARGV[1], "updated_at", ARGV[2]}
for k, v in pairs(cjson.decode(ARGV[5])) do
  args[#args + 1] = k
  args[#args + 1] = v
end
redis.call("HSET", KEYS[1], unpack(args))
redis.call("HINCRBY", KEYS[1], "version", 1)
if ARGV[1] == "DISPATCHED" then
  local keys = {}
  for _, pair in ipairs(joining) do
    redis.call("SADD", pair[1], job_id)
    keys[#keys + 1] = pair[1]
  end
  redis.call("HSET", KEYS[1], "active_sets", cjson.encode(keys))
elseif ARGV[1] ~= "RUNNING" and leaving and leaving ~= "" and leaving ~= "[]" then
  for _, key in ipairs(cjson.decode(leaving)) do
    redis.call("SREM", key, job_id)
  end
  redis.call("HSET", KEYS[1], "active_sets", "[]")
end
local sent = ARGV[1] == "DISPATCHED" and ARGV[10] ~= nil and ARGV[10] ~= ""
if sent then
  redis.call("LPUSH", KEYS[5], ARGV[10])
end
if not sent and (ARGV[1] == "PENDING" or ARGV[1] == "SCHEDULED" or ARGV[1] == "DISPATCHED") then
  redis.call("ZADD", KEYS[3], ARGV[2], job_id)
else
  redis.call("ZREM", KEYS[3], job_id)
end
redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[6], "*",
  "from", current, "to", ARGV[1], "at", ARGV[2], "reason", ARGV[3])
local announced = {SUCCEEDED = true, FAILED = true, CANCELLED = true, TIMEOUT = true, DENIED = true,
                   APPROVAL_REQUIRED = true}
if announced[ARGV[1]] then
  local run_id = redis.call("HGET", KEYS[1], "run_id")
  if run_id and run_id ~= "" then
    redis.call("XADD", KEYS[4], "MAXLEN", "~", ARGV[9], "*", "job_id", job_id, "run_id", run_id,
      "result_ptr", redis.call("HGET", KEYS[1], "result_ptr") or "")
  end
end
return {"ok", current}
