-- redis_limiter.lua -- the quota shared by every host of one scope, decided
-- atomically inside Redis on Redis's own clock (TIME), so that no host's
-- clock matters. Embedded into the daemon at build time (Makefile: the
-- generated redis_limiter_lua.h); redis.c loads it with SCRIPT LOAD and runs
-- it with EVALSHA.
--
-- KEYS[1]  camskeyd:v1:{SCOPE}:grants  sorted set: one member per grant,
--          "HOST|SLOT_US", score SLOT_US (Redis time, microseconds)
-- KEYS[2]  camskeyd:v1:{SCOPE}:meta    hash: run_id, floor_us, pause_until_us
--
-- ARGV[1] mode: "grant" or "pause"; ARGV[2] the server's run_id as the
-- client read it from INFO server on this connection (a script cannot run
-- INFO).
--
-- grant: ARGV[3] rate (grants per window, 1..1000), ARGV[4] window_us (1 s
--   plus the margin), ARGV[5] spacing_us (1..window_us), ARGV[6] host id, ARGV[7]
--   max_pending (not-yet-due grants one host may hold, >= 1), ARGV[8]
--   horizon_us (the longest delay ever granted).
--   Returns {1, delay_us, pending, slot_us}: send after delay_us (on the
--   host's monotonic clock, from when the reply arrived); pending counts this
--   host's not-yet-due grants, this one included; slot_us is the slot on
--   Redis's clock.
--   Or {0, retry_us, pending, 0, reason}: refused; reason "pending" (this host
--   holds max_pending not-yet-due grants; retry_us until its earliest is due)
--   or "horizon" (the next slot is more than horizon_us away; retry_us until
--   it is not).
-- pause: ARGV[3] pause_us, ARGV[4] window_us, ARGV[5] horizon_us (as for
--   grant: a pause may be the first call after lost state). Every host's
--   grants wait until Redis time now + pause_us (a throttle seen by one host
--   slows all; an earlier pause-until is never shortened). Returns
--   {1, pause_left_us}.
--
-- Rules, in order, for a grant at Redis time now:
--  1. lost state: if the meta hash is missing or holds another run_id (a
--     restart, a failover, FLUSHALL, an eviction), the log is forgotten (its
--     times were on another server's clock) and no grant is placed before
--     now + window_us + horizon_us: reservations handed out before the loss
--     may still be used for up to horizon_us, and their window must pass;
--  2. slot = max(now, floor, pause_until, last + spacing_us,
--     rate-th most recent + window_us): at most `rate` grants in any
--     window_us, never two closer than spacing_us. Slots only grow, so the
--     log is sorted by construction;
--  3. grants older than now - window_us cannot constrain a slot any more and
--     are dropped; the log keeps no more than the window plus what is booked;
--  4. PEXPIRE: the grants key lives one window past its last slot (then no
--     grant can constrain anything); the meta hash a day, refreshed by every
--     call, so an idle scope's log vanishes without counting as lost state.
--     Both must never be evicted: maxmemory-policy noeviction (or volatile-*
--     with memory that never fills), see docs/OPERATIONS.md.
-- A grant used late breaks the bound: the host throws away a grant it could
-- not send within its margin (redis.h says how); a slot thrown away is only
-- quota wasted.

local grants_key = KEYS[1]
local meta_key = KEYS[2]
local mode = ARGV[1]
local run_id = ARGV[2]
local META_TTL_MS = 86400000
local LOG_MAX = 4096

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function fmt(x)
	return string.format('%.0f', x)
end

-- The state of the scope; forgets a log from another server.
local function load_meta(window_us, horizon_us)
	local m = redis.call('HMGET', meta_key, 'run_id', 'floor_us', 'pause_until_us')
	local floor, pause = 0, 0
	if m[1] ~= run_id then
		redis.call('DEL', grants_key)
		floor = now + window_us + horizon_us
		redis.call('HSET', meta_key, 'run_id', run_id, 'floor_us', fmt(floor),
			'pause_until_us', '0')
	else
		floor = tonumber(m[2]) or 0
		pause = tonumber(m[3]) or 0
	end
	redis.call('PEXPIRE', meta_key, META_TTL_MS)
	return floor, pause
end

if mode == 'pause' then
	local pause_us = tonumber(ARGV[3])
	local w, h = tonumber(ARGV[4]), tonumber(ARGV[5])
	if not pause_us or pause_us < 0 or not w or w < 1 or not h or h < 0 then
		return redis.error_reply('ERR camskeyd limiter: bad arguments')
	end
	local _, pause = load_meta(w, h)
	local untilv = now + pause_us
	if untilv > pause then
		redis.call('HSET', meta_key, 'pause_until_us', fmt(untilv))
		pause = untilv
	end
	return { 1, pause - now }
end

if mode ~= 'grant' then
	return redis.error_reply('ERR camskeyd limiter: unknown mode')
end

local rate = tonumber(ARGV[3])
local window_us = tonumber(ARGV[4])
local spacing_us = tonumber(ARGV[5])
local host = ARGV[6]
local max_pending = tonumber(ARGV[7])
local horizon_us = tonumber(ARGV[8])
if not rate or rate < 1 or rate > 1000 or not window_us or window_us < 1 or
	not spacing_us or spacing_us < 1 or spacing_us > window_us or not host or host == '' or
	not max_pending or max_pending < 1 or not horizon_us or horizon_us < 0 then
	return redis.error_reply('ERR camskeyd limiter: bad arguments')
end

local floor, pause = load_meta(window_us, horizon_us)
redis.call('ZREMRANGEBYSCORE', grants_key, '-inf', fmt(now - window_us))

-- This host's not-yet-due grants (at most hosts x max_pending members).
local prefix = host .. '|'
local pending, earliest = 0, nil
local future = redis.call('ZRANGEBYSCORE', grants_key, '(' .. fmt(now), '+inf', 'WITHSCORES')
for i = 1, #future, 2 do
	if string.sub(future[i], 1, #prefix) == prefix then
		pending = pending + 1
		local s = tonumber(future[i + 1])
		if not earliest or s < earliest then earliest = s end
	end
end
if pending >= max_pending then
	return { 0, earliest - now, pending, 0, 'pending' }
end

local slot = now
if floor > slot then slot = floor end
if pause > slot then slot = pause end
local last = redis.call('ZRANGE', grants_key, -1, -1, 'WITHSCORES')
if last[2] then
	local s = tonumber(last[2]) + spacing_us
	if s > slot then slot = s end
end
local n = redis.call('ZCARD', grants_key)
if n >= LOG_MAX then
	return { 0, window_us, pending, 0, 'horizon' }
end
if n >= rate then
	local kth = redis.call('ZRANGE', grants_key, -rate, -rate, 'WITHSCORES')
	local s = tonumber(kth[2]) + window_us
	if s > slot then slot = s end
end
if slot - now > horizon_us then
	return { 0, slot - now - horizon_us, pending, 0, 'horizon' }
end

redis.call('ZADD', grants_key, fmt(slot), prefix .. fmt(slot))
redis.call('PEXPIRE', grants_key, math.floor((slot - now + window_us) / 1000) + 1000)
return { 1, slot - now, pending + 1, slot }
