-- Write or enable/disable one policy bundle and append the change to its history, atomically.
-- created_at survives updates; revision counts every change of the bundle.
--
-- KEYS[1]  <ns>:cfg:system:policy           hash    bundle id -> JSON record {content, sha256,
--                                                   author, message, created_at, updated_at,
--                                                   enabled, revision}
-- KEYS[2]  <ns>:cfg:system:policy:history   stream  one entry per change, content included
-- ARGV[1]  "put" (new content) or "enable" (only the enabled flag)
-- ARGV[2]  bundle id
-- ARGV[3]  content (YAML text) for "put", "" otherwise
-- ARGV[4]  sha256 of the content for "put", "" otherwise
-- ARGV[5]  enabled: "1", "0", or "" to keep it (a new bundle starts enabled)
-- ARGV[6]  author
-- ARGV[7]  message
-- ARGV[8]  now (seconds since the epoch, as a string)
-- ARGV[9]  history MAXLEN
-- ARGV[10] pub/sub channel <ns>:cfg:policy:changed
--
-- Returns {"ok", record_json} or {"missing", ""} ("enable" of an unknown bundle; nothing written).
local raw = redis.call("HGET", KEYS[1], ARGV[2])
local record
if raw then
  record = cjson.decode(raw)
elseif ARGV[1] == "put" then
  record = {created_at = ARGV[8], enabled = true, revision = 0}
else
  return {"missing", ""}
end

if ARGV[1] == "put" then
  record["content"] = ARGV[3]
  record["sha256"] = ARGV[4]
end
if ARGV[5] == "1" then
  record["enabled"] = true
elseif ARGV[5] == "0" then
  record["enabled"] = false
end
record["author"] = ARGV[6]
record["message"] = ARGV[7]
record["updated_at"] = ARGV[8]
record["revision"] = record["revision"] + 1
local encoded = cjson.encode(record)
redis.call("HSET", KEYS[1], ARGV[2], encoded)

local action = ARGV[1]
if action == "enable" and not record["enabled"] then
  action = "disable"
end
local revision = string.format("%d", record["revision"])
redis.call("XADD", KEYS[2], "MAXLEN", ARGV[9], "*",
  "bundle", ARGV[2], "action", action, "revision", revision,
  "enabled", record["enabled"] and "1" or "0", "author", ARGV[6], "message", ARGV[7], "at", ARGV[8],
  "sha256", record["sha256"], "content", ARGV[3])
redis.call("PUBLISH", ARGV[10], cjson.encode({bundle = ARGV[2], revision = revision}))
return {"ok", encoded}
