-- Acknowledge executed outbox commands of a run; forget the run in the outbox index once empty.
--
-- KEYS[1]  <ns>:run:<run_id>:outbox   hash
-- KEYS[2]  <ns>:outbox                zset
-- ARGV[1]  run id
-- ARGV[2..] command ids
for i = 2, #ARGV do
  redis.call("HDEL", KEYS[1], ARGV[i])
end
if redis.call("HLEN", KEYS[1]) == 0 then
  redis.call("ZREM", KEYS[2], ARGV[1])
end
return redis.call("HLEN", KEYS[1])
