"""Server-side scripts: each session operation is one atomic EVALSHA (one round trip).

Every script touches only the keys of one session, which share a hash tag, so they also run
on Redis Cluster. Scripts with the deadline helpers take a common ARGV head:
ARGV[1] now, ARGV[2] session_timeout, ARGV[3] message_timeout, ARGV[4] grace (seconds);
KEYS[1] is the session hash, KEYS[2] its deadline key.

The deadline is absolute, computed from the stored timestamps, so recomputing it is
idempotent: min(max(created, last_message, last_send) + session_timeout,
max(created, last_message) + message_timeout).
"""

from __future__ import annotations

_DEADLINE = """
local function deadline(sess)
  local v = redis.call('HMGET', sess, 'created', 'last_message', 'last_send')
  local created = tonumber(v[1]) or 0
  local lm = math.max(created, tonumber(v[2]) or created)
  local ls = math.max(created, tonumber(v[3]) or created)
  return math.min(math.max(lm, ls) + tonumber(ARGV[2]), lm + tonumber(ARGV[3]))
end
local function arm(sess, dl, d)
  local ms = math.floor((d - tonumber(ARGV[1])) * 1000 + 0.5)
  if ms < 1 then ms = 1 end
  redis.call('SET', dl, string.format('%.3f', d), 'PX', ms)
  redis.call('PEXPIRE', sess, ms + math.floor(tonumber(ARGV[4]) * 1000 + 0.5))
  return ms
end
"""

# ARGV[5..]: field, value pairs. Returns 1 if created, 0 if the session exists.
CREATE = (
    _DEADLINE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
arm(KEYS[1], KEYS[2], deadline(KEYS[1]))
return 1
"""
)

# CREATE, or the existing session's fields (HGETALL) when the key is taken: a new key costs
# one round trip, not a read and then a create. Returns 1 when created.
CREATE_OR_GET = (
    _DEADLINE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGETALL', KEYS[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
arm(KEYS[1], KEYS[2], deadline(KEYS[1]))
return 1
"""
)

# A session's own operations name it by its `sid` (the instance that wrote the record): an
# instance that lost its key to a newer one (replaced, superseded) can no longer touch, update
# or delete the newer one's record. '' matches any (an operator's command, an older node).
_SAME = """
local function same(sess, sid)
  return sid == '' or redis.call('HGET', sess, 'sid') == sid
end
"""

# ARGV[5]: 'last_message' or 'last_send' (set to now, never moved back); ARGV[6]: the sid.
# Returns the new deadline TTL in ms, 0 if the session does not exist (or is another's).
TOUCH = (
    _DEADLINE
    + _SAME
    + """
if redis.call('EXISTS', KEYS[1]) == 0 or not same(KEYS[1], ARGV[6]) then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[5]))
if cur == nil or tonumber(ARGV[1]) > cur then
  redis.call('HSET', KEYS[1], ARGV[5], ARGV[1])
end
return arm(KEYS[1], KEYS[2], deadline(KEYS[1]))
"""
)

# ARGV[5]: a channel ('' for none) and ARGV[6] a payload to PUBLISH once the session is
# updated (a set-up's state change and its event in one round trip); ARGV[7]: '1' to recompute
# the TTLs (a timestamp changed); ARGV[8]: the sid; ARGV[9..]: field, value pairs.
# Returns 1 if updated (and published), 0 if the session does not exist or is another
# instance's (never recreates it).
UPDATE = (
    _DEADLINE
    + _SAME
    + """
if redis.call('EXISTS', KEYS[1]) == 0 or not same(KEYS[1], ARGV[8]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
if ARGV[7] == '1' then arm(KEYS[1], KEYS[2], deadline(KEYS[1])) end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1
"""
)

# Returns 0: deadline key present or session gone; 1: expired (the deadline has passed);
# 2: deadline key lost (evicted, deleted) with the deadline ahead: re-armed.
SWEEP = (
    _DEADLINE
    + """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local d = deadline(KEYS[1])
if d <= tonumber(ARGV[1]) then return 1 end
arm(KEYS[1], KEYS[2], d)
return 2
"""
)

# ARGV[1]: the owner the session must have, ARGV[2] its sid ('' for any of either).
# Returns 1 if deleted.
DELETE = (
    _SAME
    + """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if not same(KEYS[1], ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
return redis.call('DEL', KEYS[1])
"""
)

# KEYS[1]: session hash; ARGV[1] expected owner, ARGV[2] new owner.
# Returns the HGETALL of the claimed session, or nil when the owner was not the expected one.
CLAIM = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
return redis.call('HGETALL', KEYS[1])
"""
