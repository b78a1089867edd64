-- Move a job to a new state if, and only if, the lifecycle allows it from the current one.
--
-- KEYS[1]  <ns>:job:<job_id>          hash    the job record
-- KEYS[2]  <ns>:job:<job_id>:events   stream  the job's append-only history
-- ARGV[1]  target state
-- ARGV[2]  now (seconds since epoch, as a string)
-- ARGV[3]  reason recorded in the history
-- ARGV[4]  JSON array of the states the target may be entered from
-- ARGV[5]  JSON object of extra fields to set with the move (all values strings)
-- ARGV[6]  history MAXLEN
-- ARGV[7]  the attempt the move belongs to, or "" for any: a move for an older attempt (a late
--          result, a redelivered message) is refused as "stale"
-- ARGV[8]  prefix of the per-tenant active sets, "<ns>:active:" (the tenant comes from the record)
-- ARGV[9]  the tenant's max concurrent jobs, or "": a move to DISPATCHED beyond it is refused as "quota"
--
-- <ns>:active:<tenant> (set of job ids) holds the tenant's DISPATCHED and RUNNING jobs: the quota
-- check and the move are one step, so concurrent dispatchers can never exceed the limit. (The key
-- is built here from the record: standalone Redis, as Coretex requires anyway.)
--
-- Returns {"ok", previous} | {"same", current} | {"illegal", current} | {"stale", current}
--       | {"quota", active count} | {"missing", ""}.
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
local active = ARGV[8] .. (redis.call("HGET", KEYS[1], "tenant_id") or "")
if ARGV[1] == "DISPATCHED" and ARGV[9] ~= "" and redis.call("SISMEMBER", active, job_id) == 0 then
  local running = redis.call("SCARD", active)
  if running >= tonumber(ARGV[9]) then
    return {"quota", tostring(running)}
  end
end
local args = {"state", ARGV[1], "updated_at", ARGV[2]}
for k, v in pairs(cjson.decode(ARGV[5])) do
  args[#args + 1] = k
  args[#args + 1] = v
end
redis.call("HSET", KEYS[1], unpack(args))
redis.call("HINCRBY", KEYS[1], "version", 1)
if ARGV[1] == "DISPATCHED" or ARGV[1] == "RUNNING" then
  redis.call("SADD", active, job_id)
else
  redis.call("SREM", active, job_id)
end
redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[6], "*",
  "from", current, "to", ARGV[1], "at", ARGV[2], "reason", ARGV[3])
return {"ok", current}
