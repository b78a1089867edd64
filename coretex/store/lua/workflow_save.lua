-- Save a workflow document as its next version, unless it equals the latest one.
--
-- KEYS[1]  <ns>:wf:<tenant>:<id>      hash    latest, v<N> (document JSON), sha:<N>, at:<N>, by:<N>
-- KEYS[2]  <ns>:wfs:<tenant>          zset    workflow id -> last save time
-- ARGV[1]  workflow id
-- ARGV[2]  document JSON without its version (the version is set here)
-- ARGV[3]  sha256 of ARGV[2]
-- ARGV[4]  now
-- ARGV[5]  saved by
--
-- Returns {version, "created" | "unchanged"}. The document stored is ARGV[2] with "version": N
-- spliced in by the caller's placeholder "__VERSION__".
local latest = tonumber(redis.call("HGET", KEYS[1], "latest") or "0")
if latest > 0 and redis.call("HGET", KEYS[1], "sha:" .. latest) == ARGV[3] then
  return {latest, "unchanged"}
end
local version = latest + 1
local doc = string.gsub(ARGV[2], '"__VERSION__"', tostring(version), 1)
redis.call("HSET", KEYS[1], "latest", version, "v" .. version, doc, "sha:" .. version, ARGV[3],
  "at:" .. version, ARGV[4], "by:" .. version, ARGV[5])
redis.call("ZADD", KEYS[2], ARGV[4], ARGV[1])
return {version, "created"}
