"""/health/ for the practika example app.

FAULT SWITCH FOR TESTS: the module-level line ``HEALTHY = True`` (after the imports) is the one tests edit.
Flip it to break health with a one-line code change, e.g.

    sed -i 's/^HEALTHY = True$/HEALTHY = False/' practika/health.py

With ``HEALTHY = False`` /health/ answers 503 {"status": "error", "reason": "HEALTHY flag is False"}.
At run time, the env var PRACTIKA_BREAK_HEALTH=1 does the same without a code change.

Otherwise /health/ runs ``SELECT 1`` on the default database (no tables needed, so it answers
before any migration) and, when REDIS_URL is set, PINGs Redis. 200 when all pass, else 503.
It never raises, and error text is scrubbed of passwords.
"""

import contextlib
import logging
import os
import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

HEALTHY = True

logger = logging.getLogger(__name__)

_URL_CREDENTIALS = re.compile(r"(//[^:/@\s]*:)[^@\s]*@")


def _secrets() -> list[str]:
    from django.conf import settings

    found: list[str] = []
    for db in settings.DATABASES.values():
        if db.get("PASSWORD"):
            found.append(str(db["PASSWORD"]))
    for key in ("DATABASE_URL", "REDIS_URL"):
        if os.environ.get(key):
            found.append(os.environ[key])
    redis_url = os.environ.get("REDIS_URL", "")
    match = re.search(r"//[^:/@]*:([^@]*)@", redis_url)
    if match and match.group(1):
        found.append(match.group(1))
    return found


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    try:
        for secret in sorted(_secrets(), key=len, reverse=True):
            if len(secret) >= 4:  # replacing 1-3 char strings would shred the message
                text = text.replace(secret, "***")
    except Exception:  # noqa: S110 - scrubbing must never break the health answer
        pass
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    text = " ".join(text.split())
    return text[:300]


def check_database() -> str:
    from django.db import connections

    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return "ok"
    except Exception as exc:
        with contextlib.suppress(Exception):
            connection.close()  # next probe starts from a fresh connection
        return _describe(exc)


def check_cache() -> str:
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    try:
        cache = caches["default"]
        if not isinstance(cache, RedisCache):
            return "not configured"
        cache._cache.get_client(write=True).ping()
        return "ok"
    except Exception as exc:
        return _describe(exc)


def _run_checks() -> tuple[dict[str, str], int]:
    if not HEALTHY:
        return {"status": "error", "reason": "HEALTHY flag is False"}, 503
    if os.environ.get("PRACTIKA_BREAK_HEALTH", "").strip() == "1":
        return {"status": "error", "reason": "broken by PRACTIKA_BREAK_HEALTH"}, 503
    database = check_database()
    cache = check_cache()
    healthy = database == "ok" and cache in ("ok", "not configured")
    body = {
        "status": "ok" if healthy else "error",
        "database": database,
        "cache": cache,
        "version": os.environ.get("APP_VERSION") or "unknown",
    }
    return body, 200 if healthy else 503


def health(request: HttpRequest) -> HttpResponse:
    try:
        body, status = _run_checks()
        if status != 200:
            logger.warning("health check failed: %s", body)
        response: HttpResponse = JsonResponse(body, status=status)
    except Exception:  # pragma: no cover - last resort, /health/ must never raise
        response = HttpResponse(
            '{"status": "error", "reason": "health check crashed"}',
            status=503,
            content_type="application/json",
        )
    response["Cache-Control"] = "no-store"
    return response


class HealthCheckMiddleware:
    """Serve /health/ ahead of host validation, https redirects and the rest of the stack."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in ("/health/", "/health"):
            return health(request)
        return self.get_response(request)
