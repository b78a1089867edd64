-- Append one record to a hash-chained audit stream, only if the chain head is still the one the
-- record was chained to (compare-and-append): concurrent writers can never fork the chain.
-- Serves every chained audit stream: <ns>:audit:decisions and <ns>:audit:policy (same key layout).
--
-- KEYS[1]  <ns>:audit:decisions            stream  the records (exact MAXLEN)
-- KEYS[2]  <ns>:audit:decisions:head       hash    hash, seq, record_id of the newest record
-- KEYS[3]  <ns>:audit:decisions:trimmed    string  INCRBY counter of records trimmed by MAXLEN
-- ARGV[1]  the record's prev_hash (must equal the head's hash; 64 zeros for the first record)
-- ARGV[2]  the record's seq (must be the head's seq + 1)
-- ARGV[3]  the record's hash
-- ARGV[4]  the record's id (decision_id, change_id)
-- ARGV[5]  MAXLEN of the stream
-- ARGV[6..] field, value, field, value, ... of the record (hash and prev_hash included)
--
-- Returns {"ok", stream id} or {"conflict", head hash, head seq, head record_id} (nothing written).
local head = redis.call("HMGET", KEYS[2], "hash", "seq", "record_id")
local head_hash = head[1] or string.rep("0", 64)
local head_seq = tonumber(head[2] or "0")
local head_id = head[3] or ""
if ARGV[1] ~= head_hash or tonumber(ARGV[2]) ~= head_seq + 1 then
  return {"conflict", head_hash, tostring(head_seq), head_id}
end
local before = redis.call("XLEN", KEYS[1])
local fields = {}
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local id = redis.call("XADD", KEYS[1], "MAXLEN", "=", ARGV[5], "*", unpack(fields))
-- Exact MAXLEN: whatever it removed is counted, so a verifier can tell trimming from deletion.
local dropped = before + 1 - redis.call("XLEN", KEYS[1])
if dropped > 0 then
  redis.call("INCRBY", KEYS[3], dropped)
end
redis.call("HSET", KEYS[2], "hash", ARGV[3], "seq", ARGV[2], "record_id", ARGV[4])
return {"ok", id}
