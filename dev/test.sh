#!/usr/bin/env bash
# The project's test command: formatting, lints, proto lint, the Kubernetes
# manifests (rendered and validated offline), then the whole
# test suite against a local PostgreSQL (dev/pg.sh).
#
# Usage: dev/test.sh [args passed on to `cargo nextest run` / `cargo test`]
#
# If QUARRY_TEST_DATABASE_URL is already set, that database is used and no
# local server is started. Otherwise the dev server is started; it is stopped
# at the end only if this script started it.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
cd "$ROOT"

section() { printf '\n==> %s\n' "$*"; }

step() {
  local name=$1
  shift
  section "$name"
  if ! "$@"; then
    printf '\ndev/test.sh: FAILED: %s (%s)\n' "$name" "$*" >&2
    exit 1
  fi
}

stop_db() { "$ROOT/dev/pg.sh" stop >/dev/null 2>&1 || true; }

section "PostgreSQL"
if [[ -n "${QUARRY_TEST_DATABASE_URL:-}" ]]; then
  printf 'using QUARRY_TEST_DATABASE_URL=%s\n' "$QUARRY_TEST_DATABASE_URL"
else
  was_running=0
  if "$ROOT/dev/pg.sh" status >/dev/null 2>&1; then was_running=1; fi
  if ! url=$("$ROOT/dev/pg.sh" start); then
    echo "dev/test.sh: FAILED: dev/pg.sh start" >&2
    exit 1
  fi
  if ((was_running == 0)); then
    trap stop_db EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
  fi
  export QUARRY_TEST_DATABASE_URL="$url"
  printf 'QUARRY_TEST_DATABASE_URL=%s\n' "$url"
fi

section "Embedding model (dev/model.sh)"
if [[ -z "${QUARRY_MODEL_DIR:-}" ]]; then
  QUARRY_MODEL_DIR=$("$ROOT/dev/model.sh") || {
    echo "dev/test.sh: FAILED: dev/model.sh" >&2
    exit 1
  }
  export QUARRY_MODEL_DIR
fi
printf 'QUARRY_MODEL_DIR=%s\n' "$QUARRY_MODEL_DIR"

section "Prometheus (dev/prometheus.sh)"
# the metrics tests scrape the server with a real Prometheus server
"$ROOT/dev/prometheus.sh" install || {
  echo "dev/test.sh: FAILED: dev/prometheus.sh install" >&2
  exit 1
}
# The multi-replica test (tests/tests/e2e/replicas.rs) balances gRPC with
# nginx from Debian; installed here, before tests run in parallel.
section "nginx (dev/nginx.sh)"
if ! "$ROOT/dev/nginx.sh" install; then
  echo "dev/test.sh: FAILED: dev/nginx.sh install (needs root and apt-get when nginx is missing)" >&2
  exit 1
fi

# The console's browser test (tests/tests/e2e/console.rs) drives Debian's
# chromium with playwright-core from console/node_modules (npm ci).
section "chromium and the console's npm packages (dev/chromium.sh, dev/console.sh)"
if ! "$ROOT/dev/chromium.sh" install; then
  echo "dev/test.sh: FAILED: dev/chromium.sh install (needs root and apt-get when chromium is missing)" >&2
  exit 1
fi
step "console bundle is the build of its sources (dev/console.sh check)" "$ROOT/dev/console.sh" check

# tests/tests/e2e/peers.rs drives LangChain's and LangGraph's SQL agents
# (PyPI, pinned in eval/peers/requirements.txt); installed once, here, before
# tests run in parallel (the test installs them itself when run alone).
section "Python SQL agents (dev/peers.sh)"
if ! "$ROOT/dev/peers.sh" install; then
  echo "dev/test.sh: FAILED: dev/peers.sh install (needs python3 with venv and PyPI)" >&2
  exit 1
fi
# The MCP test (tests/tests/e2e/mcp.rs) drives the server with the official
# MCP Python SDK; installed here once, before tests run in parallel.
section "MCP Python SDK (dev/mcp.sh)"
"$ROOT/dev/mcp.sh" >/dev/null || {
  echo "dev/test.sh: FAILED: dev/mcp.sh (pip install mcp into .dev/mcp)" >&2
  exit 1
}

step "cargo fmt --check" cargo fmt --all --check
step "cargo clippy" cargo clippy --workspace --all-targets --features quarry/dev-tools -- -D warnings
step "buf lint" "$ROOT/dev/buf.sh" lint
step "k8s manifests and Dockerfile (dev/k8s.sh check)" "$ROOT/dev/k8s.sh" check

# nextest does not run doc tests; run them first.
step "cargo test --doc" cargo test --workspace --doc --quiet

# The test runner goes last, so its summary closes the output.
if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run" cargo nextest run --workspace "$@"
else
  step "cargo test (cargo-nextest not installed)" cargo test --workspace "$@"
fi
