#!/usr/bin/env bash
# Installs the pinned Helm that `make chart-check` and the chart tests run, and prints its path.
#
#   scripts/install_helm.sh            # idempotent: builds once, then only prints the path
#
# Helm is a tool the project runs, never imports, so it is not a Python dependency: it is built
# from its Go module (Go is on every machine of this kind; a build takes about 3 minutes cold)
# into ${SCORELINE_HOME:-~/.cache/scoreline}/tools/helm-<version>/helm. Bump HELM_VERSION to upgrade.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.2}"
TOOLS="${SCORELINE_HOME:-$HOME/.cache/scoreline}/tools"
DEST="$TOOLS/helm-$HELM_VERSION"

if [ -x "$DEST/helm" ]; then
  echo "$DEST/helm"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install_helm.sh: Helm $HELM_VERSION is built from its Go module, and there is no 'go' on PATH;" \
       "install Go 1.24+ or put a helm $HELM_VERSION binary at $DEST/helm" >&2
  exit 2
fi
mkdir -p "$DEST"
echo "building Helm $HELM_VERSION into $DEST (once; about 3 minutes) ..." >&2
tmp="$(mktemp -d "$TOOLS/.helm-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
mv "$tmp/helm" "$DEST/helm"  # whole or not at all: a killed build leaves no half binary behind
echo "$DEST/helm"
