#!/usr/bin/env bash
# The Python SQL agents `quarry eval peers` compares Quarry with (issue 16):
#
#   dev/peers.sh install   install eval/peers/requirements.txt (LangChain's
#                          SQL agent, LangGraph, SQLAlchemy, psycopg2) into a
#                          virtual environment in the git-ignored .dev/peers
#                          folder, once per version of that file; prints the
#                          environment's python on stdout
#   dev/peers.sh python    print that python (installing first if needed)
#
# Needs python3 (>= 3.10) with venv and pip, and PyPI. Idempotent and safe to
# run concurrently (flock): a second run with the same requirements returns
# at once.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly VENV="$ROOT/.dev/peers"
readonly REQUIREMENTS="$ROOT/eval/peers/requirements.txt"

log() { printf 'peers.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

[[ -f "$REQUIREMENTS" ]] || die "missing $REQUIREMENTS"
HASH=$(sha256sum "$REQUIREMENTS" | cut -c1-16)
readonly STAMP="$VENV/.complete-$HASH"

install_peers() {
  command -v python3 >/dev/null || die "python3 is needed for the Python peers"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "python3 >= 3.10 is needed (langchain 1.x), found $(python3 --version 2>&1)"
  log "installing eval/peers/requirements.txt into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
  if ! PIP_ROOT_USER_ACTION=ignore "$VENV/bin/python" -m pip install --quiet \
    --disable-pip-version-check --no-warn-script-location \
    -r "$REQUIREMENTS" >&2; then
    die "pip install -r eval/peers/requirements.txt failed"
  fi
  PYTHONWARNINGS=ignore "$VENV/bin/python" -c 'import langchain_community.agent_toolkits, langchain_openai, langgraph.prebuilt, psycopg2' ||
    die "the installed peers do not import"
  touch "$STAMP"
}

ensure_peers() {
  [[ -f "$STAMP" ]] && return 0
  mkdir -p "$ROOT/.dev"
  (
    exec 9>"$ROOT/.dev/peers.lock"
    flock 9
    [[ -f "$STAMP" ]] || install_peers
  )
}

case "${1:-}" in
  install | python)
    ensure_peers
    printf '%s\n' "$VENV/bin/python"
    ;;
  *)
    echo "usage: dev/peers.sh install | python" >&2
    exit 2
    ;;
esac
