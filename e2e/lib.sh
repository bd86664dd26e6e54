# shellcheck shell=bash
# Shared by the e2e tiers that need a Kubernetes control plane (operator-tests.sh,
# discovery-tests.sh). A tier sets `tier=<name>` and sources this file; it then runs from the
# repository root with `set -euo pipefail`, `log MESSAGE` and `t0` (the start time), and calls:
#   control_plane_binaries   # builds/caches them (e2e/build-control-plane.sh), sets $bin
#   control_plane_start      # sets $state, starts the control plane, exports KUBECONFIG (an
#                            # admin); on exit stops it, dumps its logs if the script failed and
#                            # removes $state unless KEEP_STATE=1
# `run_cargo ARGS...` runs cargo niced (within `cargo_timeout` seconds if that is set);
# ROOMCAST_CARGO names another cargo (e.g. a wrapper; if that one moves the target dir, export
# CARGO_TARGET_DIR to match, the operator tier finds its binary there).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t0=$SECONDS
log() { echo "[${tier:-e2e}] $*" >&2; }
# Why the tier failed, said again as the very last line (after the logs dumped on exit), where
# a CI summary that shows only the tail of the output finds it: what `fail` said, or the
# command that stopped the script under `set -e`.
failure=""
fail() {
  failure="$*"
  log "FAIL: $*"
  exit 1
}
set -o errtrace
trap '[[ -n "$failure" ]] || failure="line $LINENO: $BASH_COMMAND"' ERR

run_cargo() {
  # cargo_timeout=SECONDS (set for one call) turns a hang into a failure.
  ${cargo_timeout:+timeout "$cargo_timeout"} nice -n 15 "${ROOMCAST_CARGO:-cargo}" "$@"
}

control_plane_binaries() {
  local t0=$SECONDS
  bin="$(bash e2e/build-control-plane.sh)"
  log "control-plane binaries ready in $((SECONDS - t0))s ($bin)"
}

_control_plane_cleanup() {
  local rc=$?
  bash e2e/control-plane.sh stop "$state" || true
  if [[ $rc -ne 0 ]]; then
    log "FAILED (exit $rc); control-plane logs:"
    for f in "$state"/logs/*.log; do
      [[ -f "$f" ]] || continue
      echo "----- $(basename "$f") (last 40 lines)" >&2
      tail -n 40 "$f" | cut -c1-400 >&2
    done
    log "FAILED (exit $rc): ${failure:-no reason recorded; see above}"
  fi
  if [[ -n "${KEEP_STATE:-}" ]]; then log "state kept in $state"; else rm -rf "$state"; fi
  exit $rc
}

control_plane_start() {
  state="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-e2e.XXXXXX")"
  trap _control_plane_cleanup EXIT
  local t0=$SECONDS
  bash e2e/control-plane.sh start "$state"
  log "control plane up in $((SECONDS - t0))s"
  export KUBECONFIG="$state/admin.kubeconfig"
}
