-- Reservation records (store.Reserver). Appended to bucket.lua, which reads
-- the time from ARGV[1]. A record is a key holding the record's bytes; the
-- index, one sorted set, scores each open record's id with its expiry
-- (µs). ARGV[2] names the operation:
--   open:  KEYS record, index; ARGV id, record, ttl (µs), grace (ms).
--          Returns 1, or 0 when the id is held (nothing changed).
--   take:  KEYS record, index, lease; ARGV id, lease (ms). Returns the
--          lease's record when the lease exists (a retry of a take);
--          else removes the open record, leases it (a copy under the lease
--          key for lease ms) and returns it; nil when it is not open
--          (absent, or past its expiry).
--   due:   KEYS index; ARGV limit. Returns up to limit ids past expiry.
--   claim: KEYS index, then one record key per id; ARGV the ids. Removes
--          each id still past expiry from the index; whoever removes it
--          gets its record. Returns {id, record, ...}.
local op = ARGV[2]
if op == 'open' then
  local ttl = tonumber(ARGV[5])
  local px = idiv(ttl + 999, 1000) + tonumber(ARGV[6])
  if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'PX', int(px)) then
    return 0
  end
  redis.call('ZADD', KEYS[2], int(now + ttl), ARGV[3])
  if redis.call('PTTL', KEYS[2]) < px then
    redis.call('PEXPIRE', KEYS[2], int(px))
  end
  return 1
elseif op == 'take' then
  local v = redis.call('GET', KEYS[3])
  if v then
    return v
  end
  local exp = redis.call('ZSCORE', KEYS[2], ARGV[3])
  if not exp or tonumber(exp) <= now then
    return false
  end
  v = redis.call('GET', KEYS[1])
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  if v then
    redis.call('SET', KEYS[3], v, 'PX', ARGV[4])
  end
  return v
elseif op == 'due' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(now), 'LIMIT', 0, tonumber(ARGV[3]))
end
local out = {}
for i = 2, #KEYS do
  local id = ARGV[i + 1]
  local exp = redis.call('ZSCORE', KEYS[1], id)
  if exp and tonumber(exp) <= now then
    redis.call('ZREM', KEYS[1], id)
    local v = redis.call('GET', KEYS[i])
    redis.call('DEL', KEYS[i])
    if v then
      out[#out + 1] = id
      out[#out + 1] = v
    end
  end
end
return out
