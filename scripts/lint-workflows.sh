#!/usr/bin/env bash
# Lints the GitHub Actions workflows (.github/workflows/) with actionlint, which runs
# ShellCheck on their `run:` scripts too. actionlint is built once with Go from the module proxy
# and cached outside the checkout (~/.cache/roomcast/tools), keyed by its version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=v1.7.12
cache="${ROOMCAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomcast}/tools/actionlint-$version"
if [[ ! -x "$cache/actionlint" ]]; then
  command -v go >/dev/null || { echo "lint-workflows: go is required to build actionlint" >&2; exit 1; }
  echo "lint-workflows: building actionlint $version into $cache" >&2
  mkdir -p "$cache"
  GOBIN="$cache" GOFLAGS=-mod=mod nice -n 15 go install "github.com/rhysd/actionlint/cmd/actionlint@$version"
fi
mapfile -t workflows < <(git ls-files '.github/workflows/*.yml' '.github/workflows/*.yaml')
[[ ${#workflows[@]} -gt 0 ]] || { echo "lint-workflows: no workflow found" >&2; exit 1; }
"$cache/actionlint" -no-color "${workflows[@]}"
echo "lint-workflows: ${#workflows[@]} workflows clean" >&2
