#!/usr/bin/env bash
# Runs buf (https://buf.build) from the repository root, e.g. `dev/buf.sh lint`.
#
# buf comes from the npm package @bufbuild/buf (it ships the prebuilt binary as
# a platform package), installed once into the git-ignored .dev/node folder.
set -euo pipefail

readonly BUF_VERSION=1.75.0

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly PREFIX="$ROOT/.dev/node"
readonly BUF="$PREFIX/node_modules/.bin/buf"
readonly STAMP="$PREFIX/.buf-$BUF_VERSION"

log() { printf 'buf.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

install_buf() {
  command -v npm >/dev/null || die "npm is needed to install @bufbuild/buf"
  log "installing @bufbuild/buf@$BUF_VERSION into $PREFIX"
  mkdir -p "$PREFIX"
  rm -f "$PREFIX"/.buf-*
  if ! npm install --prefix "$PREFIX" --no-audit --no-fund --no-update-notifier \
    --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2; then
    die "npm install @bufbuild/buf@$BUF_VERSION failed"
  fi
  "$BUF" --version >/dev/null 2>&1 || die "installed buf does not run: $BUF"
  touch "$STAMP"
}

if [[ ! -f "$STAMP" || ! -x "$BUF" ]]; then
  mkdir -p "$ROOT/.dev"
  (
    # Two concurrent runs must not both install.
    exec 9>"$ROOT/.dev/buf.lock"
    flock 9
    if [[ ! -f "$STAMP" || ! -x "$BUF" ]]; then install_buf; fi
  )
fi

# Keep buf's module cache inside the checkout rather than in $HOME.
export BUF_CACHE_DIR="${BUF_CACHE_DIR:-$ROOT/.dev/buf-cache}"
cd "$ROOT"
exec "$BUF" "$@"
