"""PostgreSQL over a real connection: up, SELECT 1 latency, connections, longest transaction, cache, size."""

from __future__ import annotations

import time
from dataclasses import dataclass

from stageflow.alerts.model import Observation
from stageflow.monitor.thresholds import Limits

_STATS = """
SELECT
  (SELECT count(*) FROM pg_stat_activity),
  current_setting('max_connections')::float,
  coalesce((SELECT extract(epoch FROM max(now() - xact_start)) FROM pg_stat_activity
            WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND state <> 'idle'), 0),
  coalesce((SELECT sum(blks_hit)::float / nullif(sum(blks_hit) + sum(blks_read), 0) * 100 FROM pg_stat_database), 100),
  coalesce((SELECT sum(deadlocks) FROM pg_stat_database), 0),
  pg_database_size(current_database())
"""


@dataclass
class PostgresCheck:
    """Connect, time ``SELECT 1``, read the server's statistics."""

    env: str
    host: str
    port: int
    user: str
    password: str | None
    dbname: str
    connections: Limits
    long_transaction: Limits
    timeout: float = 10.0
    name: str = "postgres"

    @property
    def target(self) -> str:
        """``name@host:port``."""
        return f"{self.dbname}@{self.host}:{self.port}"

    async def run(self) -> list[Observation]:
        """One connection per check: what the app would get."""
        import psycopg

        try:
            # Parameters, not a conninfo string: a password with spaces or quotes stays data.
            conn = await psycopg.AsyncConnection.connect(
                host=self.host, port=self.port, user=self.user, password=self.password or None, dbname=self.dbname,
                connect_timeout=max(1, int(self.timeout)), application_name="stageflow-monitor", autocommit=True)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or ["connection failed"])[-1][:200]
            return [Observation(self.env, "postgres", self.target, "critical", f"PostgreSQL is down: {first}",
                                hint=f"is the server running? pg_isready -h {self.host} -p {self.port}",
                                metrics=[("db_up", 0.0)])]
        try:
            async with conn:
                start = time.perf_counter()
                await conn.execute("SELECT 1")
                latency = (time.perf_counter() - start) * 1000
                cur = await conn.execute(_STATS)
                row = await cur.fetchone()
        except psycopg.Error as exc:
            return [Observation(self.env, "postgres", self.target, "critical", f"PostgreSQL query failed: {exc}"[:240],
                                metrics=[("db_up", 0.0)])]
        assert row is not None
        used, max_conn, longest, hit, deadlocks, size = (float(v) for v in row)
        pct = used / max_conn * 100 if max_conn else 0.0
        sev_c = self.connections.severity(pct)
        sev_t = self.long_transaction.severity(longest)
        return [
            Observation(self.env, "postgres", self.target, "ok",
                        f"up, SELECT 1 in {latency:.1f}ms, cache hit {hit:.1f}%, {deadlocks:.0f} deadlocks, "
                        f"{size / 2**20:.0f} MB", latency, unit="ms",
                        metrics=[("db_up", 1.0), ("db_latency_ms", latency), ("db_cache_hit", hit),
                                 ("db_deadlocks", deadlocks), ("db_size_mb", size / 2**20)]),
            Observation(self.env, "db_connections", self.target, sev_c,
                        f"{used:.0f} of {max_conn:.0f} connections ({pct:.0f}%)", pct, self.connections.shown, "%",
                        hint="connection leak or too many workers; raise max_connections or add a pooler"
                        if sev_c != "ok" else "", metrics=[("db_connections", used)]),
            Observation(self.env, "long_transaction", self.target, sev_t,
                        f"longest open transaction {longest:.0f}s", longest, self.long_transaction.shown, "s",
                        hint="find it: SELECT pid, now() - xact_start, query FROM pg_stat_activity"
                        if sev_t != "ok" else ""),
        ]
