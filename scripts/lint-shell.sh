#!/usr/bin/env bash
# Lints every shell script of the repository with shellcheck (warnings and errors fail).
# Installs shellcheck from Debian's packages when it is missing (as root), so `make test` works
# on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v shellcheck >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "lint-shell: installing shellcheck (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq shellcheck >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq shellcheck >/dev/null; }
  fi
fi
command -v shellcheck >/dev/null || { echo "lint-shell: shellcheck is required (apt-get install shellcheck)" >&2; exit 1; }

mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
shellcheck --severity=warning "${scripts[@]}"
echo "lint-shell: ${#scripts[@]} scripts clean" >&2
