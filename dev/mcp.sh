#!/usr/bin/env bash
# Installs the official Model Context Protocol Python SDK (PyPI `mcp`,
# https://github.com/modelcontextprotocol/python-sdk) once and prints the
# path of the Python interpreter that has it, e.g.
#
#   "$(dev/mcp.sh)" tests/mcp/client.py --url http://127.0.0.1:50051/mcp --token …
#
# It is installed into a virtual environment in the git-ignored .dev/mcp
# folder, the way dev/grpcurl.sh installs grpcurl. The e2e test
# tests/tests/e2e/mcp.rs runs this script to find the interpreter, then drives
# `quarry serve`'s MCP endpoint with tests/mcp/client.py.
set -euo pipefail

readonly PACKAGE=mcp
readonly PACKAGE_VERSION=2.3.0

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly VENV="$ROOT/.dev/mcp"
readonly STAMP="$VENV/.complete-$PACKAGE_VERSION"

log() { printf 'mcp.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

install() {
  command -v python3 >/dev/null || die "python3 is needed to install $PACKAGE"
  log "installing $PACKAGE==$PACKAGE_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
  if ! PIP_ROOT_USER_ACTION=ignore "$VENV/bin/python" -m pip install --quiet \
    --disable-pip-version-check --no-warn-script-location \
    "$PACKAGE==$PACKAGE_VERSION" >&2; then
    die "pip install $PACKAGE==$PACKAGE_VERSION failed"
  fi
  "$VENV/bin/python" -c 'import mcp.client.streamable_http' >&2 ||
    die "the installed $PACKAGE cannot be imported"
  touch "$STAMP"
}

if [[ ! -f "$STAMP" ]]; then
  mkdir -p "$ROOT/.dev"
  (
    # Two concurrent runs (parallel tests) must not both install.
    exec 9>"$ROOT/.dev/mcp.lock"
    flock 9
    if [[ ! -f "$STAMP" ]]; then install; fi
  )
fi
printf '%s\n' "$VENV/bin/python"
