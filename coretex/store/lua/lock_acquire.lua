-- Grant, renew, upgrade or downgrade a lock on one resource, or queue the caller for it.
--
-- KEYS[1]  <ns>:lock:holders:<resource>  zset    owner -> expires_at (ms, server clock)
-- KEYS[2]  <ns>:lock:state:<resource>    hash    mode -> "shared"|"exclusive"; "t:"..owner -> token
-- KEYS[3]  <ns>:lock:queue:<resource>    zset    waiting owner -> ticket (FIFO order)
-- KEYS[4]  <ns>:lock:waiters:<resource>  hash    waiting owner -> "<mode>|<stale_at ms>"
-- KEYS[5]  <ns>:lock:fence               string  fencing-token counter of the namespace (never expires)
-- ARGV[1]  owner
-- ARGV[2]  mode: "shared" | "exclusive"
-- ARGV[3]  TTL of the grant, ms
-- ARGV[4]  wait left, ms: 0 = do not queue; > 0 = join (or stay in) the queue when not granted
-- ARGV[5]  waiter lease, ms: a waiter that does not poll again within it is dropped
-- ARGV[6]  most waiters the queue may hold
--
-- Returns {"granted", token, expires_at_ms}
--       | {"queued", waiters_ahead, held_mode_or_empty}
--       | {"busy", held_mode_or_empty, holder_count, queue_length}
--       | {"full", queue_length}
--
-- Rules: expired holders are dropped first, so a dead owner's lock frees itself at its TTL.
-- The same owner in the same mode renews (same token). A mode change by the sole holder
-- (shared -> exclusive upgrade, exclusive -> shared downgrade) is granted with a new token.
-- Anyone else is granted only when compatible with the holders AND first in line: the queue head,
-- or a shared request with only shared waiters ahead of it (a newcomer counts as behind the tail).
local holders, state, queue, waiters, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local owner, mode = ARGV[1], ARGV[2]
local ttl, wait_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease, max_waiters = tonumber(ARGV[5]), tonumber(ARGV[6])

local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function prune_holders()
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
end

-- The mode a live waiter asks for, or nil when it is gone or stale (its process stopped polling).
local function waiter_mode(who)
  local entry = redis.call("HGET", waiters, who)
  if not entry then
    return nil
  end
  local sep = string.find(entry, "|", 1, true)
  if tonumber(string.sub(entry, sep + 1)) <= now then
    return nil
  end
  return string.sub(entry, 1, sep - 1)
end

local function drop_waiter(who)
  redis.call("ZREM", queue, who)
  redis.call("HDEL", waiters, who)
end

local function first_in_line()
  for _, who in ipairs(redis.call("ZRANGE", queue, 0, -1)) do
    if who == owner then
      return true
    end
    local wanted = waiter_mode(who)
    if not wanted then
      drop_waiter(who)
    elseif mode == "exclusive" or wanted == "exclusive" then
      return false
    end
  end
  return true
end

local function prune_queue()
  for _, who in ipairs(redis.call("ZRANGE", queue, 0, -1)) do
    if not waiter_mode(who) then
      drop_waiter(who)
    end
  end
end

-- Lengthen a key's life to `at` (never shorten it: other waiters may need it longer).
local function extend(key, at)
  local pttl = redis.call("PTTL", key)
  if pttl == -1 or (pttl >= 0 and now + pttl < at) then
    redis.call("PEXPIREAT", key, at)
  end
end

local function grant(token)
  local expires = now + ttl
  redis.call("ZADD", holders, expires, owner)
  redis.call("HSET", state, "mode", mode, "t:" .. owner, token)
  drop_waiter(owner)
  local last = redis.call("ZRANGE", holders, -1, -1, "WITHSCORES")
  redis.call("PEXPIREAT", holders, last[2])
  redis.call("PEXPIREAT", state, last[2])
  return {"granted", token, expires}
end

prune_holders()
local held_mode = redis.call("HGET", state, "mode")
local my_token = redis.call("HGET", state, "t:" .. owner)
if my_token then
  if held_mode == mode then
    return grant(tonumber(my_token))
  end
  if redis.call("ZCARD", holders) == 1 then
    return grant(redis.call("INCR", fence))
  end
elseif (not held_mode or (mode == "shared" and held_mode == "shared")) and first_in_line() then
  return grant(redis.call("INCR", fence))
end

if wait_ms <= 0 then
  return {"busy", held_mode or "", redis.call("ZCARD", holders), redis.call("ZCARD", queue)}
end
if not redis.call("ZSCORE", queue, owner) then
  if redis.call("ZCARD", queue) >= max_waiters then
    prune_queue()
    if redis.call("ZCARD", queue) >= max_waiters then
      return {"full", redis.call("ZCARD", queue)}
    end
  end
  local tail = redis.call("ZRANGE", queue, -1, -1, "WITHSCORES")
  local ticket = 1
  if tail[2] then
    ticket = tonumber(tail[2]) + 1
  end
  redis.call("ZADD", queue, ticket, owner)
end
local stale_at = now + math.min(wait_ms, lease)
redis.call("HSET", waiters, owner, mode .. "|" .. stale_at)
extend(queue, stale_at)
extend(waiters, stale_at)
return {"queued", redis.call("ZRANK", queue, owner), held_mode or ""}
