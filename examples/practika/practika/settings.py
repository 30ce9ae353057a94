"""Settings for the practika example app.

Everything is configured through environment variables (see README.md); nothing
secret lives in this file.
"""

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUTHY = {"1", "true", "yes", "on"}
_FALSY = {"", "0", "false", "no", "off"}


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUTHY:
        return True
    if value in _FALSY:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/true/yes or 0/false/no), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


def env_list(name: str, default: str) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        raw = default
    return [item.strip() for item in raw.split(",") if item.strip()]


def parse_database_url(url: str, base_dir: Path) -> dict[str, object]:
    """Turn ``sqlite:///rel``, ``sqlite:////abs`` or ``postgres://u:p@h:port/name`` into a DATABASES entry.

    Error messages never echo the URL, because it may carry a password.
    """
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme == "sqlite":
            # sqlite:///db.sqlite3 -> path "/db.sqlite3" (relative); sqlite:////abs -> "//abs" (absolute)
            raw_path = unquote(parts.netloc + parts.path)
            raw_path = raw_path.removeprefix("/")
            if raw_path in ("", ":memory:"):
                name: object = ":memory:"
            elif raw_path.startswith("/"):
                name = Path(raw_path)
            else:
                name = base_dir / raw_path
            return {"ENGINE": "django.db.backends.sqlite3", "NAME": name}
        if scheme in ("postgres", "postgresql", "pgsql"):
            options: dict[str, object] = dict(parse_qsl(parts.query))
            options.setdefault("connect_timeout", "5")
            return {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": unquote(parts.path.removeprefix("/")),
                "USER": unquote(parts.username or ""),
                "PASSWORD": unquote(parts.password or ""),
                # unquote so a socket directory can be given as %2Fvar%2Frun%2Fpostgresql
                "HOST": unquote(parts.hostname or ""),
                "PORT": str(parts.port or ""),
                "OPTIONS": options,
                "CONN_MAX_AGE": 0,
            }
    except ValueError as exc:  # e.g. a non-numeric port
        raise ImproperlyConfigured(f"DATABASE_URL is malformed ({exc.__class__.__name__})") from None
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {parts.scheme!r} is not supported; use sqlite:// or postgres://"
    )


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "django-insecure-practika-debug-only-key"  # only ever used with DEBUG on
    else:
        raise ImproperlyConfigured(
            "SECRET_KEY environment variable is required when DEBUG is off "
            "(set DEBUG=1 for local development, or export SECRET_KEY)."
        )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.staticfiles",
    "notes",
]

MIDDLEWARE = [
    # Answers /health/ before anything else runs, so the container healthcheck (which
    # talks to 127.0.0.1) is neither rejected by ALLOWED_HOSTS nor redirected to https.
    "practika.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "practika.urls"
WSGI_APPLICATION = "practika.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

DATABASES = {
    "default": parse_database_url(os.environ.get("DATABASE_URL") or "sqlite:///db.sqlite3", BASE_DIR)
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "").strip()
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- HTTPS / security (all off by default so plain local http works) ---
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT")
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE")
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD")
# Trust X-Forwarded-Proto only when told to (i.e. when a proxy that sets it sits in front).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("SECURE_PROXY_SSL_HEADER") else None

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

LOG_LEVEL = (os.environ.get("LOG_LEVEL") or "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "plain"},
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["stdout"], "level": LOG_LEVEL, "propagate": False},
    },
}
