-- Push a holder's expiry to now + TTL, keeping its mode and fencing token.
--
-- KEYS[1]  <ns>:lock:holders:<resource>  zset  owner -> expires_at (ms, server clock)
-- KEYS[2]  <ns>:lock:state:<resource>    hash  mode -> "shared"|"exclusive"; "t:"..owner -> token
-- ARGV[1]  owner
-- ARGV[2]  TTL from now, ms
--
-- Returns {"renewed", token, expires_at_ms, mode} | {"not_held"}.
-- Expired holders are dropped first: a lock that lapsed cannot be renewed, only acquired again
-- (with a new token), so a holder that lost its lock always learns it.
local holders, state, owner = KEYS[1], KEYS[2], ARGV[1]
local ttl = tonumber(ARGV[2])

local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local gone = redis.call("ZRANGEBYSCORE", holders, "-inf", now)
for _, who in ipairs(gone) do
  redis.call("HDEL", state, "t:" .. who)
end
if #gone > 0 then
  redis.call("ZREMRANGEBYSCORE", holders, "-inf", now)
end

local token = redis.call("HGET", state, "t:" .. owner)
if token then
  redis.call("ZADD", holders, "XX", now + ttl, owner)
end
local last = redis.call("ZRANGE", holders, -1, -1, "WITHSCORES")
if last[2] then
  redis.call("PEXPIREAT", holders, last[2])
  redis.call("PEXPIREAT", state, last[2])
else
  redis.call("DEL", holders, state)
end
if not token then
  return {"not_held"}
end
return {"renewed", tonumber(token), now + ttl, redis.call("HGET", state, "mode")}
