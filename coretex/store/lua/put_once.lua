-- Write an immutable pointer payload: the first write wins, later writes change nothing.
--
-- KEYS[1]  <ns>:ctx:<id> | <ns>:res:<id>   hash  {tenant, content_type, sha256, size, data, created_at}
-- ARGV[1]  JSON object of the fields (all values strings)
-- ARGV[2]  TTL, seconds
--
-- Returns 1 when written, 0 when the pointer already existed.
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
local args = {}
for k, v in pairs(cjson.decode(ARGV[1])) do
  args[#args + 1] = k
  args[#args + 1] = v
end
redis.call("HSET", KEYS[1], unpack(args))
redis.call("EXPIRE", KEYS[1], ARGV[2])
return 1
