-- The shared version of a kernel policy snapshot: every kernel of a namespace that installs the
-- same merged policy reports the same version; a different policy gets the next one.
--
-- KEYS[1]  <ns>:kernel:policy:version   hash   {version, sha256} of the latest snapshot installed
--                                              by any kernel of the namespace
-- ARGV[1]  sha256 of the merged policy being installed
--
-- Returns the version (integer, >= 1). Versions only grow: a policy that comes back after
-- another one (a rollback) gets a new version, since its snapshot is new to the fleet.
local current = redis.call("HMGET", KEYS[1], "version", "sha256")
if current[2] == ARGV[1] and current[1] then
  return tonumber(current[1])
end
local version = redis.call("HINCRBY", KEYS[1], "version", 1)
redis.call("HSET", KEYS[1], "sha256", ARGV[1])
return version
