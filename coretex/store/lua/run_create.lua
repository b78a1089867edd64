-- Create a workflow run once: per-tenant idempotency key, per-tenant concurrency limit.
--
-- KEYS[1]  <ns>:run:<run_id>                 hash    doc (JSON), version, tenant, updated_at
-- KEYS[2]  <ns>:idem:run:<tenant>:<sha> or ""  string  run id owning the idempotency key
-- KEYS[3]  <ns>:runs:active                  set     every run not yet ended
-- KEYS[4]  <ns>:runs:active:<tenant>         set     the tenant's runs not yet ended
-- KEYS[5]  <ns>:runs:<tenant>                zset    the tenant's runs by creation time
-- ARGV[1]  run id
-- ARGV[2]  doc (JSON)
-- ARGV[3]  tenant
-- ARGV[4]  now
-- ARGV[5]  idempotency window, seconds
-- ARGV[6]  max concurrent runs of the tenant (0: no limit)
--
-- Returns {"created", run_id}, {"duplicate", existing_run_id} or {"limit", running_count}.
if KEYS[2] ~= "" then
  local owner = redis.call("GET", KEYS[2])
  if owner then
    return {"duplicate", owner}
  end
end
if redis.call("EXISTS", KEYS[1]) == 1 then
  return {"duplicate", ARGV[1]}
end
local limit = tonumber(ARGV[6])
if limit > 0 then
  local running = redis.call("SCARD", KEYS[4])
  if running >= limit then
    return {"limit", tostring(running)}
  end
end
if KEYS[2] ~= "" then
  redis.call("SET", KEYS[2], ARGV[1], "EX", ARGV[5])
end
redis.call("HSET", KEYS[1], "doc", ARGV[2], "version", "1", "tenant", ARGV[3], "updated_at", ARGV[4])
redis.call("SADD", KEYS[3], ARGV[1])
redis.call("SADD", KEYS[4], ARGV[1])
redis.call("ZADD", KEYS[5], ARGV[4], ARGV[1])
return {"created", ARGV[1]}
