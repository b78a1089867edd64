-- Create a job record once, honouring a per-tenant idempotency key.
--
-- KEYS[1]  <ns>:job:<job_id>                 hash    the job record
-- KEYS[2]  <ns>:job:<job_id>:events          stream  the job's append-only history
-- KEYS[3]  <ns>:idem:<tenant>:<key> or ""    string  job id owning the idempotency key
-- KEYS[4]  <ns>:jobs:undispatched            zset    job id -> when it last waited for the scheduler
-- ARGV[1]  job id
-- ARGV[2]  JSON object of the record's fields (all values strings)
-- ARGV[3]  TTL of record and history, seconds
-- ARGV[4]  idempotency window, seconds
-- ARGV[5]  now (seconds since epoch, as a string)
-- ARGV[6]  history MAXLEN
-- ARGV[7]  "" to leave the job PENDING; else the history reason of its move on to SCHEDULED, made
--          in the same step (the submitter runs the dispatch pipeline itself, right away)
--
-- Returns {"created", job_id} or {"duplicate", existing_job_id}: a job id is created once (a
-- workflow derives its jobs' ids, so a replayed dispatch finds the job it already created).
if redis.call("EXISTS", KEYS[1]) == 1 then
  return {"duplicate", ARGV[1]}
end
if KEYS[3] ~= "" then
  local owner = redis.call("GET", KEYS[3])
  if owner then
    return {"duplicate", owner}
  end
  redis.call("SET", KEYS[3], ARGV[1], "EX", ARGV[4])
end
local fields = cjson.decode(ARGV[2])
local args = {}
for k, v in pairs(fields) do
  args[#args + 1] = k
  args[#args + 1] = v
end
redis.call("HSET", KEYS[1], unpack(args))
redis.call("EXPIRE", KEYS[1], ARGV[3])
redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[6], "*",
  "from", "", "to", fields["state"], "at", ARGV[5], "reason", "submitted")
if ARGV[7] ~= "" then
  redis.call("HSET", KEYS[1], "state", "SCHEDULED", "version", tonumber(fields["version"] or "1") + 1)
  redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[6], "*",
    "from", fields["state"], "to", "SCHEDULED", "at", ARGV[5], "reason", ARGV[7])
end
redis.call("EXPIRE", KEYS[2], ARGV[3])
redis.call("ZADD", KEYS[4], ARGV[5], ARGV[1])
return {"created", ARGV[1]}
