#!/usr/bin/env bash
# Local PostgreSQL 16 + pgvector for development and tests.
#
# Usage: dev/pg.sh start|stop|status|url|psql [psql args...]
#
# The server binaries come from the PyPI wheel `pgserver` (PostgreSQL 16.2 with
# pgvector 0.6.2 under pgserver/pginstall/), installed into the git-ignored
# .dev/ folder of this checkout. Nothing is installed system-wide except, when
# run as root, a system user `quarry` (PostgreSQL refuses to run as root).
#
# Environment:
#   QUARRY_PG_PORT  TCP port on 127.0.0.1 (default 54329). Only read when the
#                   server is started; a running server reports its own port.
#   QUARRY_PG_BASE  Folder of another cluster (its pgdata/, run/, pg.log and
#                   lock), for a test that stops and starts its own server
#                   (tests/tests/e2e/faults.rs) without touching the shared
#                   one; the binaries stay in .dev/. Must be reachable by the
#                   OS user (e.g. under /tmp).
#
# `start` prints the connection string as its last line on stdout; progress
# and diagnostics go to stderr, so `url=$(dev/pg.sh start)` works.
set -euo pipefail

readonly PGSERVER_VERSION=0.1.4
readonly DEFAULT_PORT=54329
readonly OS_USER=quarry
readonly DB_NAME=quarry
readonly DB_USER=postgres

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly DEV="$ROOT/.dev"
# Where the server's files go when the OS user cannot reach $DEV (for example
# a checkout under /root, which is mode 700).
readonly FALLBACK_DIR=/var/lib/quarry-dev

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  cat >&2 <<'EOF'
usage: dev/pg.sh start|stop|status|url|psql [psql args...]
  start   install (once), initialise (once) and start PostgreSQL; prints the URL
  stop    stop the server (fast shutdown); no-op when not running
  status  print whether it runs; exit 0 when running, 3 when not
  url     print postgres://postgres@127.0.0.1:PORT/quarry
  psql    run psql against the quarry database, passing the remaining args
EOF
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# Run a command as the OS user that owns the cluster, from a directory it can
# read (initdb and postgres complain when the working directory is unreadable).
as_pg() {
  if is_root; then
    (cd / && runuser -u "$OS_USER" -- "$@")
  else
    (cd / && "$@")
  fi
}

ensure_os_user() {
  is_root || return 0
  id -u "$OS_USER" >/dev/null 2>&1 && return 0
  command -v runuser >/dev/null || die "runuser not found (package util-linux)"
  log "creating system user '$OS_USER' to run PostgreSQL (it refuses to run as root)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$OS_USER" ||
    id -u "$OS_USER" >/dev/null 2>&1 || die "could not create user '$OS_USER'"
}

# Layout. BASE holds pgdata/, run/ and pg.log; PKG holds the unpacked wheel.
resolve_layout() {
  mkdir -p "$DEV"
  BASE="$DEV"
  PKG="$DEV/pgserver-$PGSERVER_VERSION"
  # Without the OS user (before the first start) there is no cluster to find.
  if is_root && id -u "$OS_USER" >/dev/null 2>&1; then
    chmod 755 "$DEV"
    if ! as_pg test -x "$DEV"; then
      # Some parent folder is not traversable by $OS_USER: keep the binaries
      # and the cluster in a folder it can reach, one cluster per checkout.
      local key
      key=$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
      mkdir -p "$FALLBACK_DIR"
      chmod 755 "$FALLBACK_DIR"
      BASE="$FALLBACK_DIR/$key"
      PKG="$FALLBACK_DIR/pgserver-$PGSERVER_VERSION"
      mkdir -p "$BASE"
      chmod 755 "$BASE"
      printf '%s\n' "$ROOT" >"$BASE/checkout"
    fi
  fi
  if [[ -n "${QUARRY_PG_BASE:-}" ]]; then
    BASE=$QUARRY_PG_BASE
    mkdir -p "$BASE"
    chmod 755 "$BASE"
  fi
  LOCK_FILE="$BASE/pg.lock"
  [[ "$BASE" == "$DEV" || -n "${QUARRY_PG_BASE:-}" ]] || LOCK_FILE="$DEV/pg.lock"
  PGDATA_DIR="$BASE/pgdata"
  LOG_FILE="$BASE/pg.log"
  RUN_DIR="$BASE/run"
  # A Unix socket path must fit in 107 bytes.
  if ((${#RUN_DIR} > 90)); then
    RUN_DIR="/tmp/quarry-pg-$(printf '%s' "$BASE" | sha256sum | cut -c1-12)"
  fi
  PGBIN="$PKG/pgserver/pginstall/bin"
}

ensure_installed() {
  [[ -f "$PKG/.complete" && -x "$PGBIN/postgres" ]] && return 0
  command -v python3 >/dev/null || die "python3 is needed to install pgserver"
  log "installing PostgreSQL (PyPI pgserver==$PGSERVER_VERSION) into $PKG"
  local tmp="$PKG.tmp.$$"
  rm -rf "$tmp"
  # The wheel is built for CPython 3.11, but its PostgreSQL binaries do not use
  # Python at all, so ask for that wheel whatever python3 is here.
  if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
    --disable-pip-version-check --no-warn-script-location --no-deps \
    --only-binary=:all: --implementation cp --python-version 3.11 \
    --abi cp311 --platform manylinux2014_x86_64 \
    --target "$tmp" "pgserver==$PGSERVER_VERSION" >&2; then
    rm -rf "$tmp"
    die "pip install pgserver==$PGSERVER_VERSION failed"
  fi
  [[ -x "$tmp/pgserver/pginstall/bin/postgres" ]] ||
    die "pgserver wheel has no pginstall/bin/postgres"
  # The binaries find their libraries through RPATH $ORIGIN/../../../pgserver.libs,
  # so the wheel's layout is kept as is; no LD_LIBRARY_PATH needed.
  touch "$tmp/.complete"
  rm -rf "$PKG"
  mv "$tmp" "$PKG"
}

# Port of the running server (from postmaster.pid), or the configured one.
current_port() {
  local pidfile="$PGDATA_DIR/postmaster.pid" port=""
  if is_running && [[ -r "$pidfile" ]]; then
    port=$(sed -n 4p "$pidfile")
  fi
  printf '%s\n' "${port:-${QUARRY_PG_PORT:-$DEFAULT_PORT}}"
}

url_for() { printf 'postgres://%s@127.0.0.1:%s/%s\n' "$DB_USER" "$1" "$DB_NAME"; }

is_initialised() { [[ -f "$PGDATA_DIR/PG_VERSION" ]]; }

is_running() {
  is_initialised || return 1
  [[ -x "$PGBIN/pg_ctl" ]] || return 1
  as_pg "$PGBIN/pg_ctl" status -D "$PGDATA_DIR" >/dev/null 2>&1
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

own_dir() {
  mkdir -p "$1"
  if is_root; then chown "$OS_USER:$OS_USER" "$1"; fi
  chmod 700 "$1"
}

initialise() {
  is_initialised && return 0
  local tmp="$PGDATA_DIR.init"
  rm -rf "$tmp"
  own_dir "$tmp"
  log "initialising cluster in $PGDATA_DIR"
  if ! as_pg "$PGBIN/initdb" -D "$tmp" --auth=trust -U "$DB_USER" -E UTF8 \
    --locale=C >"$BASE/initdb.log" 2>&1; then
    cat "$BASE/initdb.log" >&2
    die "initdb failed"
  fi
  printf "include_if_exists = 'quarry.conf'\n" >>"$tmp/postgresql.conf"
  mv "$tmp" "$PGDATA_DIR"
}

# shared_buffers: a quarter of the machine's memory, between 128 MB and 8 GB
# (PostgreSQL docs 20.4.1: "a reasonable starting value for shared_buffers is
# 25% of the memory in your system"). An HNSW index that does not fit is read
# through the OS cache page by page on every search (1M 384-dim vectors make
# about 2 GB of index). Pages are only touched as they are used.
# QUARRY_PG_SHARED_BUFFERS (e.g. 256MB) overrides it; read when the server
# starts.
shared_buffers_setting() {
  if [[ -n ${QUARRY_PG_SHARED_BUFFERS:-} ]]; then
    printf '%s' "$QUARRY_PG_SHARED_BUFFERS"
    return
  fi
  local kb
  kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || true)
  [[ $kb =~ ^[0-9]+$ ]] || kb=0
  local mb=$((kb / 4 / 1024))
  ((mb < 128)) && mb=128
  ((mb > 8192)) && mb=8192
  printf '%dMB' "$mb"
}

write_config() {
  # Rewritten on each start so changes here reach existing clusters.
  local shared_buffers
  shared_buffers=$(shared_buffers_setting)
  [[ $shared_buffers =~ ^[0-9]+(kB|MB|GB)$ ]] ||
    die "QUARRY_PG_SHARED_BUFFERS must be a size such as 256MB (got '$shared_buffers')"
  cat >"$PGDATA_DIR/quarry.conf" <<EOF
# Written by dev/pg.sh on every start; edits are overwritten.
listen_addresses = '127.0.0.1'
max_connections = 200
shared_preload_libraries = ''
# A throwaway development/test cluster: trade durability for speed.
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = $shared_buffers
EOF
  if is_root; then chown "$OS_USER:$OS_USER" "$PGDATA_DIR/quarry.conf"; fi
}

psql_admin() {
  local port=$1
  shift
  PGOPTIONS='-c client_min_messages=warning' \
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$DB_USER" "$@"
}

ensure_database() {
  local port=$1 exists
  exists=$(psql_admin "$port" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")
  if [[ "$exists" != 1 ]]; then
    psql_admin "$port" -d postgres -c "CREATE DATABASE $DB_NAME" >/dev/null
  fi
  psql_admin "$port" -d "$DB_NAME" -c "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null
}

# Serialises start/stop of this checkout's cluster. Commands that may leave a
# daemon behind must not inherit fd 9, or the daemon would hold the lock.
with_lock() {
  exec 9>"$LOCK_FILE"
  flock 9
}

cmd_start() {
  with_lock
  ensure_installed
  initialise
  local port
  if is_running; then
    port=$(current_port)
    if [[ -n "${QUARRY_PG_PORT:-}" && "$QUARRY_PG_PORT" != "$port" ]]; then
      log "warning: already running on port $port, not QUARRY_PG_PORT=$QUARRY_PG_PORT (stop it to change)"
    fi
  else
    port=${QUARRY_PG_PORT:-$DEFAULT_PORT}
    [[ "$port" =~ ^[0-9]+$ ]] || die "QUARRY_PG_PORT must be a number, got '$port'"
    if port_in_use "$port"; then
      die "port $port on 127.0.0.1 is taken by another process; set QUARRY_PG_PORT to a free port"
    fi
    write_config
    own_dir "$RUN_DIR"
    touch "$LOG_FILE"
    if is_root; then chown "$OS_USER:$OS_USER" "$LOG_FILE"; fi
    if ! as_pg "$PGBIN/pg_ctl" start -D "$PGDATA_DIR" -l "$LOG_FILE" -w -t 60 -s \
      -o "-p $port -k $RUN_DIR" >&2 9>&-; then
      log "server did not start; last lines of $LOG_FILE:"
      tail -n 20 "$LOG_FILE" >&2 || true
      exit 1
    fi
    log "PostgreSQL started on 127.0.0.1:$port (data $PGDATA_DIR, log $LOG_FILE)"
  fi
  ensure_database "$port"
  url_for "$port"
}

cmd_stop() {
  with_lock
  if ! is_running; then
    log "not running"
    return 0
  fi
  as_pg "$PGBIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 60 -s >&2
  log "stopped"
}

cmd_status() {
  if is_running; then
    local pid
    pid=$(sed -n 1p "$PGDATA_DIR/postmaster.pid")
    printf 'running (pid %s, data %s)\n' "$pid" "$PGDATA_DIR"
    url_for "$(current_port)"
  else
    printf 'not running (data %s)\n' "$PGDATA_DIR"
    return 3
  fi
}

cmd_psql() {
  is_running || die "not running; start it with dev/pg.sh start"
  exec "$PGBIN/psql" -h 127.0.0.1 -p "$(current_port)" -U "$DB_USER" -d "$DB_NAME" "$@"
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    start | stop | status | url | psql) ;;
    -h | --help | help)
      usage
      return 0
      ;;
    *)
      usage
      return 2
      ;;
  esac
  if [[ "$cmd" == start ]]; then ensure_os_user; fi
  resolve_layout
  case "$cmd" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    url) url_for "$(current_port)" ;;
    psql) cmd_psql "$@" ;;
  esac
}

main "$@"
