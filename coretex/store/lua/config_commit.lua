-- Commit a new effective config: documents, index, pack order, version, snapshot, history entry
-- and the change notification, all or nothing, only if nobody committed since the caller read.
--
-- KEYS[1]  <ns>:cfg:version          string  INCR counter of effective config versions
-- KEYS[2]  <ns>:cfg:snapshot         hash    the current effective system config
-- KEYS[3]  <ns>:cfg:history          stream  one entry per commit
-- KEYS[4]  <ns>:cfg:index            set     "<scope>:<id>" of every config document
-- KEYS[5]  <ns>:cfg:pack_order       list    pack ids in install order
-- KEYS[6..] <ns>:cfg:<scope>:<id>    hash    the documents this commit writes or deletes
-- ARGV[1]  version the change was computed on ("0" before the first commit)
-- ARGV[2]  JSON array aligned with KEYS[6..]: {"member": "<scope>:<id>", "fields": {...}}
--          replaces the document hash, {"member": ..., "delete": true} removes it
-- ARGV[3]  JSON array: the complete pack install order after this commit
-- ARGV[4]  JSON object of snapshot fields (sha256, config, author, message, updated_at)
-- ARGV[5]  JSON object of history fields (everything but the version)
-- ARGV[6]  history MAXLEN
-- ARGV[7]  pub/sub channel <ns>:cfg:changed
--
-- Returns {"ok", new_version} or {"conflict", current_version} (nothing written).
local current = tonumber(redis.call("GET", KEYS[1]) or "0")
if current ~= tonumber(ARGV[1]) then
  return {"conflict", tostring(current)}
end

local function hset_all(key, fields)
  local args = {}
  for k, v in pairs(fields) do
    args[#args + 1] = k
    args[#args + 1] = v
  end
  redis.call("HSET", key, unpack(args))
end

for i, op in ipairs(cjson.decode(ARGV[2])) do
  local key = KEYS[5 + i]
  redis.call("DEL", key)
  if op["delete"] then
    redis.call("SREM", KEYS[4], op["member"])
  else
    hset_all(key, op["fields"])
    redis.call("SADD", KEYS[4], op["member"])
  end
end

redis.call("DEL", KEYS[5])
local order = cjson.decode(ARGV[3])
if #order > 0 then
  redis.call("RPUSH", KEYS[5], unpack(order))
end

local version = tostring(redis.call("INCR", KEYS[1]))
local snapshot = cjson.decode(ARGV[4])
snapshot["version"] = version
hset_all(KEYS[2], snapshot)

local entry = {"version", version}
for k, v in pairs(cjson.decode(ARGV[5])) do
  entry[#entry + 1] = k
  entry[#entry + 1] = v
end
redis.call("XADD", KEYS[3], "MAXLEN", ARGV[6], "*", unpack(entry))
redis.call("PUBLISH", ARGV[7], cjson.encode({version = version, sha256 = snapshot["sha256"]}))
return {"ok", version}
