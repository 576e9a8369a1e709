"""Rate limits shared by every process on every host: GCRA in Redis, one atomic script.

GCRA keeps one timestamp per limit, the theoretical arrival time (TAT) of the
next unit. A request costing `c` units fits when `TAT + c*T - burst*T <= now`,
T being the time one unit takes to replenish. Several limits (requests, input
tokens, output tokens) are checked and taken together, so a request never
holds part of its quota while waiting for the rest. Time comes from the Redis
server, so hosts with skewed clocks agree.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import redis
from django.conf import settings
from redis.commands.core import Script

# KEYS: the pause key, then one TAT key per limit.
# ARGV: pairs of (seconds per unit, burst in units, cost in units) per limit.
# Returns 0 and takes the quota, or the seconds to wait (as a string) and takes nothing.
_ACQUIRE = """
local now_s, now_us = unpack(redis.call('TIME'))
local now = tonumber(now_s) + tonumber(now_us) / 1e6
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then return tostring(paused - now) end
local wait, tats = 0, {}
for i = 2, #KEYS do
  local unit, burst, cost = tonumber(ARGV[i*3-5]), tonumber(ARGV[i*3-4]), tonumber(ARGV[i*3-3])
  local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or '0'), now)
  local new_tat = tat + cost * unit
  local allowed_at = new_tat - math.max(burst, cost) * unit
  if allowed_at > now then wait = math.max(wait, allowed_at - now) end
  tats[i] = new_tat
end
if wait > 0 then return tostring(wait) end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], tostring(tats[i]), 'PX', math.ceil((tats[i] - now) * 1000) + 1000)
end
return '0'
"""

# Gives back units taken but not used (an answer shorter than max_tokens).
_REFUND = """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat == 0 then return 0 end
redis.call('SET', KEYS[1], tostring(tat - tonumber(ARGV[1])), 'KEEPTTL')
return 1
"""

# Blocks every caller of this limiter until now + seconds, unless already blocked for longer.
_PAUSE = """
local now_s, now_us = unpack(redis.call('TIME'))
local until_ = tonumber(now_s) + tonumber(now_us) / 1e6 + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return 1
"""


@dataclass(frozen=True)
class Limit:
    """`per_minute` units a minute, of which `burst` may be taken at once."""

    name: str
    per_minute: int
    burst: int

    @property
    def seconds_per_unit(self) -> float:
        return 60.0 / self.per_minute


_client: redis.Redis | None = None
_client_lock = threading.Lock()


def get_redis() -> redis.Redis:
    """One connection pool per process, on the Redis of REDIS_URL."""
    global _client
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5
            )
        return _client


@functools.cache
def _script(source: str) -> Script:
    """A registered script, once per process: registering hashes the source every time."""
    return get_redis().register_script(source)


class Limiter:
    """A set of limits taken together under one key prefix (`<prefix>:rl:<scope>:`).

    Cheap to build: a submission makes one per user, the scripts are shared.
    """

    def __init__(self, scope: str, limits: list[Limit]) -> None:
        self.scope = scope
        self.limits = limits
        self._acquire = _script(_ACQUIRE)
        self._refund = _script(_REFUND)
        self._pause = _script(_PAUSE)

    def _key(self, name: str) -> str:
        return f"{settings.AIJOBS_REDIS_PREFIX}:rl:{self.scope}:{name}"

    def acquire(self, costs: dict[str, int]) -> float:
        """Take `costs` (units per limit name) now and return 0, or return the seconds to wait."""
        keys = [self._key("pause")] + [self._key(limit.name) for limit in self.limits]
        args: list[float] = []
        for limit in self.limits:
            args += [limit.seconds_per_unit, limit.burst, costs.get(limit.name, 0)]
        return float(self._acquire(keys=keys, args=args))

    def refund(self, name: str, units: int) -> None:
        limit = next((limit for limit in self.limits if limit.name == name), None)
        if limit is not None and units > 0:
            self._refund(keys=[self._key(name)], args=[units * limit.seconds_per_unit])

    def pause(self, seconds: float) -> None:
        self._pause(keys=[self._key("pause")], args=[seconds])
