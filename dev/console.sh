#!/usr/bin/env bash
# The web console's front end (console/): its npm packages, pinned in
# console/package-lock.json, installed with `npm ci` into console/node_modules
# (git-ignored); its bundle, console/dist/, committed so that `cargo build`
# needs no Node.js, and embedded in the server binary (server/src/console.rs).
#
# Usage:
#   dev/console.sh install   npm ci (when the lockfile changed since the last)
#   dev/console.sh build     install, generate the protobuf code
#                            (protoc-gen-es through dev/buf.sh), bundle with
#                            esbuild into console/dist/
#   dev/console.sh check     build into a temporary folder and fail unless it
#                            is byte for byte the committed console/dist/
#   dev/console.sh size      the bundle's bytes, raw and gzip -9
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly CONSOLE="$ROOT/console"
readonly STAMP="$CONSOLE/node_modules/.quarry-lock"

log() { printf 'console.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

install() {
  command -v npm >/dev/null || die "npm is needed (apt-get install nodejs npm)"
  mkdir -p "$ROOT/.dev"
  (
    # concurrent callers (tests in parallel) must not both run npm ci
    exec 9>"$ROOT/.dev/console-npm.lock"
    flock 9
    if [[ ! -f "$STAMP" ]] || ! cmp -s "$STAMP" "$CONSOLE/package-lock.json"; then
      log "npm ci in console/"
      (cd "$CONSOLE" && npm ci --no-audit --no-fund --no-update-notifier --loglevel=error >&2) ||
        die "npm ci failed"
      cp "$CONSOLE/package-lock.json" "$STAMP"
    fi
  )
}

# bundle OUT: the console's sources into the folder OUT
bundle() {
  local out=$1
  "$ROOT/dev/buf.sh" generate --template console/buf.gen.yaml
  rm -rf "$out"
  mkdir -p "$out"
  (
    cd "$CONSOLE"
    node_modules/.bin/esbuild src/main.js --bundle --format=esm --platform=browser \
      --target=es2022 --minify --charset=utf8 --legal-comments=linked \
      --log-level=warning --outfile="$out/app.js"
  )
  cp "$CONSOLE/static/index.html" "$CONSOLE/static/app.css" "$out/"
}

case "${1:-}" in
  install) install ;;
  build)
    install
    bundle "$CONSOLE/dist"
    log "built console/dist"
    ;;
  check)
    install
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    bundle "$tmp/dist"
    if ! diff -r "$CONSOLE/dist" "$tmp/dist" >/dev/null; then
      diff -rq "$CONSOLE/dist" "$tmp/dist" >&2 || true
      die "console/dist differs from a fresh build of console/src: run dev/console.sh build and commit"
    fi
    log "console/dist is the build of console/src"
    ;;
  size)
    for f in "$CONSOLE"/dist/*; do
      printf '%s\t%d bytes\t%d gzip\n' "${f#"$ROOT"/}" "$(wc -c <"$f")" "$(gzip -9c "$f" | wc -c)"
    done
    ;;
  *) die "usage: dev/console.sh install | build | check | size" ;;
esac
