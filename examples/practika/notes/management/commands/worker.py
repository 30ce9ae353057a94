"""``python manage.py worker``: a small background worker, the shape of a Celery worker.

It takes jobs (note titles) from the Redis list ``practika:jobs`` and saves each as a note whose
body names the release that did it (``APP_VERSION``). Without ``REDIS_URL`` it idles. SIGTERM ends
it between two jobs, so a redeploy never cuts one in half.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand

from notes.models import Note

QUEUE = "practika:jobs"


class Command(BaseCommand):
    help = "Process jobs from the Redis list practika:jobs until SIGTERM."

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        version = os.environ.get("APP_VERSION") or "unknown"
        url = os.environ.get("REDIS_URL", "").strip()
        client = None
        if url:
            import redis

            client = redis.Redis.from_url(url, socket_timeout=5)
        self.stdout.write(f"worker {version} ready ({'queue ' + QUEUE if client else 'no REDIS_URL: idle'})")
        while not stopping:
            if client is None:
                time.sleep(1)
                continue
            try:
                job = client.blpop([QUEUE], timeout=1)
            except redis.RedisError as exc:
                self.stderr.write(f"worker: redis: {type(exc).__name__}")
                time.sleep(1)
                continue
            if job is not None:
                title = job[1].decode("utf-8", "replace")[:200]
                Note.objects.create(title=title, body=f"done by {version}")
                self.stdout.write(f"worker {version} did {title!r}")
        self.stdout.write(f"worker {version} stopped")
