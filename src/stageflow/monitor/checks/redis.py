"""Redis: up, PING latency, used memory vs maxmemory, hit ratio, evictions, rejected clients."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from stageflow.alerts.model import Observation
from stageflow.monitor.thresholds import Limits


def redis_target(url: str) -> str:
    """``host:port/db`` of a redis URL, never its password."""
    p = urlsplit(url)
    return f"{p.hostname or '127.0.0.1'}:{p.port or 6379}{p.path or '/0'}"


@dataclass
class RedisCheck:
    """PING and INFO over one connection."""

    env: str
    url: str
    memory: Limits
    timeout: float = 10.0
    name: str = "redis"

    @property
    def target(self) -> str:
        """Where, without credentials."""
        return redis_target(self.url)

    async def run(self) -> list[Observation]:
        """Measure; a refused or failed connection is a critical observation."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        client = aioredis.Redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        try:
            start = time.perf_counter()
            await client.ping()
            latency = (time.perf_counter() - start) * 1000
            info = await client.info()
        except (RedisError, OSError) as exc:
            return [Observation(self.env, "redis", self.target, "critical", f"Redis is down: {exc}"[:240],
                                hint="is redis-server running? redis-cli -h HOST -p PORT ping",
                                metrics=[("redis_up", 0.0)])]
        finally:
            await client.aclose()
        used = float(info.get("used_memory", 0))
        maxmem = float(info.get("maxmemory", 0) or 0)
        hits, misses = float(info.get("keyspace_hits", 0)), float(info.get("keyspace_misses", 0))
        ratio = hits / (hits + misses) * 100 if hits + misses else 100.0
        evicted, rejected = float(info.get("evicted_keys", 0)), float(info.get("rejected_connections", 0))
        out = [Observation(self.env, "redis", self.target, "ok",
                           f"up, PING in {latency:.1f}ms, hit ratio {ratio:.0f}%, {evicted:.0f} evictions, "
                           f"{rejected:.0f} rejected clients", latency, unit="ms",
                           metrics=[("redis_up", 1.0), ("redis_latency_ms", latency), ("redis_hit", ratio),
                                    ("redis_evicted", evicted), ("redis_rejected", rejected),
                                    ("redis_used_mb", used / 2**20)])]
        if maxmem:
            pct = used / maxmem * 100
            sev = self.memory.severity(pct)
            out.append(Observation(self.env, "redis_memory", self.target, sev,
                                   f"used {used / 2**20:.1f} of {maxmem / 2**20:.0f} MB ({pct:.0f}%)", pct,
                                   self.memory.shown, "%",
                                   hint="keys without TTL, or raise maxmemory" if sev != "ok" else ""))
        return out
