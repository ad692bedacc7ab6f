#!/usr/bin/env bash
# Runs the Dockerfile's build steps as a plain script, for machines without a Docker engine:
# the COPY lines into a temporary /app, the RUN lines with a fresh virtualenv's python/pip
# standing in for the image's, then the image's ENV and a few entry-point commands.
# It checks that the image's install works from the files the Dockerfile copies (nothing
# else from the checkout leaks in); it does not check the base image or the USER line.
#
#   deploy/dockerfile_smoke.sh [python3.11]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
app="$work/app"
mkdir -p "$app"

"$python" -m venv "$work/venv"
export PATH="$work/venv/bin:$PATH" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# Join continuation lines, then replay COPY / RUN / ENV / WORKDIR in order.
sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$repo/Dockerfile" | while read -r instruction rest; do
  case "$instruction" in
    COPY)
      read -r -a parts <<< "$rest"
      dest="${parts[-1]}"; unset 'parts[-1]'
      target="$app/${dest#./}"
      for src in "${parts[@]}"; do
        if [[ "$dest" == */ ]]; then mkdir -p "$target"; cp -r "$repo/$src" "$target"; else cp -r "$repo/$src" "$target"; fi
      done
      echo "COPY $rest" ;;
    RUN)
      echo "RUN $rest"
      (cd "$app" && bash -euo pipefail -c "$rest") ;;
    ENV)
      echo "ENV $rest"
      # ENV paths point into /app: re-root them under the temporary app directory.
      echo "export ${rest//\/app/$app}" >> "$work/env.sh" ;;
  esac
done

# shellcheck disable=SC1091
[[ -f "$work/env.sh" ]] && source "$work/env.sh"
cd "$work"  # not the checkout: the installed package must stand on its own
scoreline --help > /dev/null
scoreline run --help | grep -q -- --metrics-port
scoreline top --help > /dev/null
python -c "import prometheus_client, streams.ops.metrics, streams.ops.http, scoreline.top_view"
python -c "from workflows import ModelRegistry; r = ModelRegistry.default(); print('models:', ', '.join(r.ids()))"
echo "dockerfile smoke: OK"
