#!/usr/bin/env bash
# A real Prometheus server for tests and by hand, from the Debian package
# `prometheus` (installed with apt-get when /usr/bin/prometheus is missing;
# needs root, as in CI).
#
# Usage:
#   dev/prometheus.sh install
#       install prometheus if missing; prints the binary's path
#   dev/prometheus.sh start TARGET DIR [INTERVAL]
#       start a server scraping http://TARGET/metrics (host:port) every
#       INTERVAL (default 1s), on a free 127.0.0.1 port, configuration and
#       data under DIR (created); prints its base URL once it is ready
#   dev/prometheus.sh stop DIR
#       stop the server started with DIR
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly PROMETHEUS=${QUARRY_PROMETHEUS:-/usr/bin/prometheus}

log() { printf 'prometheus.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

install() {
  if [[ -x "$PROMETHEUS" ]]; then
    echo "$PROMETHEUS"
    return
  fi
  mkdir -p "$ROOT/.dev"
  (
    # concurrent tests must not run apt-get at the same time
    exec 9>"$ROOT/.dev/prometheus.lock"
    flock 9
    if [[ ! -x "$PROMETHEUS" ]]; then
      command -v apt-get >/dev/null || die "no apt-get to install prometheus"
      ((EUID == 0)) || die "installing prometheus needs root (apt-get install -y prometheus)"
      log "installing the Debian package prometheus"
      export DEBIAN_FRONTEND=noninteractive
      # the package lists may be missing on a fresh image: update then retry
      if ! apt-get install -y -qq --no-install-recommends prometheus >&2; then
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends prometheus >&2
      fi
      # the package's own service (systemd) is not ours to run
    fi
  ) || die "installing prometheus failed"
  [[ -x "$PROMETHEUS" ]] || die "$PROMETHEUS missing after install"
  echo "$PROMETHEUS"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local target=$1 dir=$2 interval=${3:-1s}
  install >/dev/null
  mkdir -p "$dir/data"
  cat >"$dir/prometheus.yml" <<EOF
global:
  scrape_interval: $interval
  evaluation_interval: $interval
scrape_configs:
  - job_name: quarry
    metrics_path: /metrics
    static_configs:
      - targets: ["$target"]
EOF
  local port attempt
  for attempt in 1 2 3; do
    port=$(free_port)
    "$PROMETHEUS" --config.file="$dir/prometheus.yml" \
      --storage.tsdb.path="$dir/data" \
      --web.listen-address="127.0.0.1:$port" \
      >"$dir/prometheus.log" 2>&1 &
    echo $! >"$dir/pid"
    local i
    for i in $(seq 1 100); do
      if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
        "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then
        echo "http://127.0.0.1:$port"
        return
      fi
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
      sleep 0.2
    done
    log "attempt $attempt: prometheus did not become ready on port $port"
    stop "$dir"
  done
  tail -n 20 "$dir/prometheus.log" >&2 || true
  die "prometheus did not start"
}

stop() {
  local dir=$1
  [[ -f "$dir/pid" ]] || return 0
  local pid
  pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  install) install ;;
  start)
    (($# >= 3)) || die "usage: dev/prometheus.sh start TARGET DIR [INTERVAL]"
    start "$2" "$3" "${4:-1s}"
    ;;
  stop)
    (($# == 2)) || die "usage: dev/prometheus.sh stop DIR"
    stop "$2"
    ;;
  *) die "usage: dev/prometheus.sh install | start TARGET DIR [INTERVAL] | stop DIR" ;;
esac
