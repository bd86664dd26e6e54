#!/usr/bin/env bash
# Builds the data-plane and operator images (`make images`) with docker (buildx) or podman,
# whichever answers. Tags: $REGISTRY/roomcast-{dataplane,operator}:<chart appVersion>.
#
# Env: REGISTRY (default ghcr.io/roomcast, where the release workflow publishes and the chart
# points), TAG (default the chart's appVersion), PLATFORMS (default the host's; e.g.
# linux/amd64,linux/arm64 builds both by cross-compiling, see docker/cross.sh), PUSH=1 (push
# instead of loading into the local image store; needed by docker for several platforms),
# ENGINE=docker|podman (default: the first that answers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

registry=${REGISTRY:-ghcr.io/roomcast}
tag=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/roomcast-operator/Chart.yaml)}
[[ -n "$tag" ]] || { echo "images: no appVersion in charts/roomcast-operator/Chart.yaml" >&2; exit 1; }

engine=${ENGINE:-}
if [[ -z "$engine" ]]; then
  for candidate in docker podman; do
    if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then
      engine=$candidate
      break
    fi
  done
fi
[[ -n "$engine" ]] || {
  echo "images: neither docker nor podman answers (install one and start its daemon/socket)" >&2
  exit 1
}

for component in dataplane operator; do
  image="$registry/roomcast-$component:$tag"
  echo "images: building $image with $engine${PLATFORMS:+ for $PLATFORMS}" >&2
  if [[ "$engine" == docker ]]; then
    args=(buildx build -f "docker/$component.Dockerfile" -t "$image")
    [[ -n "${PLATFORMS:-}" ]] && args+=(--platform "$PLATFORMS")
    if [[ -n "${PUSH:-}" ]]; then args+=(--push); else args+=(--load); fi
    docker "${args[@]}" .
  else
    args=(build -f "docker/$component.Dockerfile")
    if [[ -n "${PLATFORMS:-}" ]]; then
      args+=(--platform "$PLATFORMS" --manifest "$image")
    else
      args+=(-t "$image")
    fi
    podman "${args[@]}" .
    if [[ -n "${PUSH:-}" ]]; then
      if [[ -n "${PLATFORMS:-}" ]]; then podman manifest push "$image" "docker://$image"; else podman push "$image"; fi
    fi
  fi
done
