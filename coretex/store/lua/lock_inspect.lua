-- Read a lock as it stands: mode, live holders with expiry and token, live waiters.
--
-- KEYS[1]  <ns>:lock:holders:<resource>  zset  owner -> expires_at (ms, server clock)
-- KEYS[2]  <ns>:lock:state:<resource>    hash  mode -> "shared"|"exclusive"; "t:"..owner -> token
-- KEYS[3]  <ns>:lock:queue:<resource>    zset  waiting owner -> ticket
-- KEYS[4]  <ns>:lock:waiters:<resource>  hash  waiting owner -> "<mode>|<stale_at ms>"
--
-- Returns {mode_or_empty, waiting, owner1, expires_at_ms1, token1, owner2, ...}, holders by expiry.
-- Expired holders and stale waiters are dropped on the way (the only cleanup locks ever need).
local holders, state, queue, waiters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local gone = redis.call("ZRANGEBYSCORE", holders, "-inf", now)
for _, who in ipairs(gone) do
  redis.call("HDEL", state, "t:" .. who)
end
if #gone > 0 then
  redis.call("ZREMRANGEBYSCORE", holders, "-inf", now)
end
if redis.call("ZCARD", holders) == 0 then
  redis.call("DEL", holders, state)
end

for _, who in ipairs(redis.call("ZRANGE", queue, 0, -1)) do
  local entry = redis.call("HGET", waiters, who)
  local sep = entry and string.find(entry, "|", 1, true)
  if not sep or tonumber(string.sub(entry, sep + 1)) <= now then
    redis.call("ZREM", queue, who)
    redis.call("HDEL", waiters, who)
  end
end

local out = {redis.call("HGET", state, "mode") or "", redis.call("ZCARD", queue)}
local held = redis.call("ZRANGE", holders, 0, -1, "WITHSCORES")
for i = 1, #held, 2 do
  out[#out + 1] = held[i]
  out[#out + 1] = tonumber(held[i + 1])
  out[#out + 1] = tonumber(redis.call("HGET", state, "t:" .. held[i]))
end
return out
