# shellcheck shell=bash
# Helpers shared by the project's scripts (sourced): installing what a script needs on a fresh
# machine, the same way everywhere.

# ensure_command COMMAND PACKAGE: succeeds when COMMAND is on PATH, installing Debian's PACKAGE
# with apt-get first when it is missing and this runs as root. Otherwise says what to install
# (on stderr) and fails.
ensure_command() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing $pkg (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null; } \
      || true
  fi
  command -v "$cmd" >/dev/null && return 0
  echo "$cmd is required (apt-get install $pkg)" >&2
  return 1
}

# npm_ci_locked DIR...: `npm ci` in each DIR from its committed package-lock.json, skipped when
# node_modules was installed from the same lockfile (a stamp file holds its hash).
npm_ci_locked() {
  local dir stamp sum
  for dir in "$@"; do
    stamp="$dir/node_modules/.roomcast-lock.sha256"
    sum="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$sum" ]]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return 1
      echo "$sum" >"$stamp"
    fi
  done
}
