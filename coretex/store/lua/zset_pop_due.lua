-- Pop up to ARGV[2] members whose score is at or before ARGV[1], atomically: each due member is
-- handed to exactly one caller, however many ticks run at once.
--
-- KEYS[1]  a zset of member -> due time (<ns>:timers, <ns>:leases)
-- ARGV[1]  now (seconds since epoch, as a string)
-- ARGV[2]  most members to pop
--
-- Returns a flat list: member, score, member, score, ...
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "WITHSCORES", "LIMIT", 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do
  redis.call("ZREM", KEYS[1], due[i])
end
return due
