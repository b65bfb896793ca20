#!/usr/bin/env bash
# Headless Chromium for the console's browser test, from the Debian package
# `chromium` (installed with apt-get when missing; needs root, as in CI).
# Nothing downloads a browser of its own: the test drives this one with
# playwright-core (console/, `executablePath`).
#
# Usage:
#   dev/chromium.sh install
#       install chromium if missing; prints the binary's path
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly CHROMIUM=${QUARRY_CHROMIUM:-/usr/bin/chromium}

log() { printf 'chromium.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

install() {
  if [[ -x "$CHROMIUM" ]]; then
    echo "$CHROMIUM"
    return
  fi
  mkdir -p "$ROOT/.dev"
  (
    # concurrent callers must not run apt-get at the same time
    exec 9>"$ROOT/.dev/chromium.lock"
    flock 9
    if [[ ! -x "$CHROMIUM" ]]; then
      command -v apt-get >/dev/null || die "no apt-get to install chromium"
      ((EUID == 0)) || die "installing chromium needs root (apt-get install -y chromium)"
      log "installing the Debian package chromium"
      export DEBIAN_FRONTEND=noninteractive
      # the package lists may be missing on a fresh image: update then retry;
      # wait for another apt-get (e.g. dev/nginx.sh) rather than fail
      local apt=(apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium fonts-liberation)
      if ! "${apt[@]}" >&2; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
        "${apt[@]}" >&2
      fi
    fi
  ) || die "installing chromium failed"
  [[ -x "$CHROMIUM" ]] || die "$CHROMIUM missing after install"
  echo "$CHROMIUM"
}

case "${1:-}" in
  install) install ;;
  *) die "usage: dev/chromium.sh install" ;;
esac
