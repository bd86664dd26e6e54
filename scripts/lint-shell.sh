#!/usr/bin/env bash
# Lints every shell script of the repository with shellcheck (warnings and errors fail).
# Installs shellcheck from Debian's packages when it is missing (as root), so `make test` works
# on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_command shellcheck shellcheck || exit 1

mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
shellcheck --severity=warning "${scripts[@]}"
echo "lint-shell: ${#scripts[@]} scripts clean" >&2
