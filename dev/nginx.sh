#!/usr/bin/env bash
# nginx as a gRPC load balancer for tests and by hand, from the Debian
# package `nginx` (installed with apt-get when missing; needs root, as in CI).
#
# Usage:
#   dev/nginx.sh install
#       install nginx if missing; prints the binary's path
#   dev/nginx.sh run DIR PORT UPSTREAM...
#       write DIR/nginx.conf balancing gRPC (HTTP/2 cleartext, `grpc_pass`,
#       round robin per call) over the UPSTREAM servers (host:port) and
#       listening on 127.0.0.1:PORT, then run nginx in the foreground as
#       one process (`master_process off`), logging to stderr; stop it with
#       SIGTERM (or SIGKILL: no worker survives it)
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly NGINX=${QUARRY_NGINX:-/usr/sbin/nginx}

log() { printf 'nginx.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

install() {
  if [[ -x "$NGINX" ]]; then
    echo "$NGINX"
    return
  fi
  mkdir -p "$ROOT/.dev"
  (
    # concurrent callers must not run apt-get at the same time
    exec 9>"$ROOT/.dev/nginx.lock"
    flock 9
    if [[ ! -x "$NGINX" ]]; then
      command -v apt-get >/dev/null || die "no apt-get to install nginx"
      ((EUID == 0)) || die "installing nginx needs root (apt-get install -y nginx)"
      log "installing the Debian package nginx"
      export DEBIAN_FRONTEND=noninteractive
      # the package lists may be missing on a fresh image: update then retry;
      # wait for another apt-get (e.g. dev/prometheus.sh) rather than fail
      local apt=(apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends nginx)
      if ! "${apt[@]}" >&2; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
        "${apt[@]}" >&2
      fi
      # the package's own service is not ours to run: stop it if it started
      if [[ -f /run/nginx.pid ]]; then
        "$NGINX" -s quit >/dev/null 2>&1 || true
      fi
    fi
  ) || die "installing nginx failed"
  [[ -x "$NGINX" ]] || die "$NGINX missing after install"
  echo "$NGINX"
}

run() {
  (($# >= 3)) || die "usage: dev/nginx.sh run DIR PORT UPSTREAM..."
  local dir=$1 port=$2
  shift 2
  install >/dev/null
  mkdir -p "$dir/tmp"
  dir=$(cd -- "$dir" && pwd -P)
  local servers="" upstream
  for upstream in "$@"; do
    servers+="    server $upstream;"$'\n'
  done
  cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  upstream quarry {
$servers    keepalive 16;
  }
  server {
    # gRPC over HTTP/2 cleartext (prior knowledge), as Quarry serves it
    listen 127.0.0.1:$port http2;
    location / {
      grpc_pass grpc://quarry;
      grpc_read_timeout 300s;
      grpc_send_timeout 300s;
    }
  }
}
CONF
  exec "$NGINX" -p "$dir" -e stderr -c "$dir/nginx.conf"
}

case "${1:-}" in
  install) install ;;
  run)
    shift
    run "$@"
    ;;
  *) die "usage: dev/nginx.sh install | run DIR PORT UPSTREAM..." ;;
esac
