-- Decide a pending approval exactly once.
--
-- KEYS[1]  <ns>:approval:<job_id>              hash  the approval
-- KEYS[2]  <ns>:approvals:pending:<tenant>     zset  pending job ids of the tenant
-- ARGV[1]  job id
-- ARGV[2]  new status ("approved" | "rejected")
-- ARGV[3]  decided_by
-- ARGV[4]  note
-- ARGV[5]  now (seconds since epoch, as a string)
--
-- Returns "ok", "missing", or the status it already had.
local status = redis.call("HGET", KEYS[1], "status")
if not status then
  return "missing"
end
if status ~= "pending" then
  return status
end
redis.call("HSET", KEYS[1], "status", ARGV[2], "decided_by", ARGV[3], "note", ARGV[4], "decided_at", ARGV[5])
redis.call("ZREM", KEYS[2], ARGV[1])
return "ok"
