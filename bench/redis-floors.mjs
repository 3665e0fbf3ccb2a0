// The Redis floors the benchmarks measure cachelock against, as ioredis commands: the least a
// lock costs with no library (SET NX PX, then a compare-and-delete script), and the least one
// with a fence costs. Shared by redis.mjs and instructions-redis.mjs.

const RELEASE_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;
export function withFloor(client) {
  client.defineCommand('floorRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
  return client;
}

// The least a lock with a fence costs here: the fence (the server's clock in microseconds, as
// cachelock's) must be read where the key is set, so the acquire is a script too.
const FENCED_ACQUIRE_LUA = `local now = redis.call('TIME')
local fence = now[1] .. string.sub('00000' .. now[2], -6)
if redis.call('SET', KEYS[1], fence .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2]) then return fence end
return false`;
const FENCED_RELEASE_LUA = `local value = redis.call('GET', KEYS[1])
if value and string.sub(value, -#ARGV[1] - 1) == ':' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;
export function withFencedFloor(client) {
  client.defineCommand('fencedAcquire', { numberOfKeys: 1, lua: FENCED_ACQUIRE_LUA });
  client.defineCommand('fencedRelease', { numberOfKeys: 1, lua: FENCED_RELEASE_LUA });
  return client;
}

// The least a lock costs where waiters in other processes are served in turn: a try that takes
// the key or joins its line, and a release that gives the key to the first in line and tells
// that waiter on a channel of its own. Two scripts and one message per contended section, as
// cachelock's hand-off, with no fence, no lease for a place in line and no check of a late
// message.
const TAKE_OR_JOIN_LUA = `if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 0`;
const HAND_ON_LUA = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local next = redis.call('LPOP', KEYS[2])
if not next then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], next, 'PX', ARGV[2])
redis.call('PUBLISH', 'handed:' .. next, '1')
return 1`;
export function withPushFloor(client) {
  client.defineCommand('takeOrJoin', { numberOfKeys: 2, lua: TAKE_OR_JOIN_LUA });
  client.defineCommand('handOn', { numberOfKeys: 2, lua: HAND_ON_LUA });
  return client;
}
