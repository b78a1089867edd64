-- Append a batch of records to a hash-chained audit stream, only if the chain head is still the
-- one the first record was chained to (compare-and-append, for many records at once: a kernel's
-- concurrent decisions share one round trip instead of racing for the head).
--
-- KEYS[1]  <ns>:audit:<log>            stream  the records (exact MAXLEN)
-- KEYS[2]  <ns>:audit:<log>:head       hash    hash, seq, record_id of the newest record
-- KEYS[3]  <ns>:audit:<log>:trimmed    string  INCRBY counter of records trimmed by MAXLEN
-- ARGV[1]  prev_hash of the first record (must equal the head's hash)
-- ARGV[2]  seq of the first record (must be the head's seq + 1); the others follow one by one
-- ARGV[3]  MAXLEN of the stream
-- ARGV[4]  JSON array of [record id, record hash, field, value, ...], one array per record,
--          already chained to each other in order (the fields are XADDed in the order given)
--
-- Returns the new stream ids joined by "," (one per record, in order: a single string is the cheapest
-- reply to read) or, when the head has moved, {"conflict", head hash, head seq, head record_id}.
local head = redis.call("HMGET", KEYS[2], "hash", "seq", "record_id")
local head_hash = head[1] or string.rep("0", 64)
local head_seq = tonumber(head[2] or "0")
local head_id = head[3] or ""
if ARGV[1] ~= head_hash or tonumber(ARGV[2]) ~= head_seq + 1 then
  return {"conflict", head_hash, tostring(head_seq), head_id}
end
local records = cjson.decode(ARGV[4])
local before = redis.call("XLEN", KEYS[1])
local ids = {}
for i, record in ipairs(records) do
  ids[i] = redis.call("XADD", KEYS[1], "MAXLEN", "=", ARGV[3], "*", unpack(record, 3))
end
-- Exact MAXLEN: whatever it removed is counted, so a verifier can tell trimming from deletion.
local dropped = before + #records - redis.call("XLEN", KEYS[1])
if dropped > 0 then
  redis.call("INCRBY", KEYS[3], dropped)
end
local last = records[#records]
redis.call("HSET", KEYS[2], "hash", last[2], "seq", tonumber(ARGV[2]) + #records - 1, "record_id", last[1])
return table.concat(ids, ",")
