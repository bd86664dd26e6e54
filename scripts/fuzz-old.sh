#!/usr/bin/env bash
# Runs the fuzz targets against an older commit, to show that each finds what it was built
# to find. Usage: scripts/fuzz-old.sh [COMMIT [WORKTREE]] (default e8fada8, the commit before
# the structure refactor and the hostile-client fixes, in /tmp/roomcast-fuzz-old).
#
# Adds a detached worktree at COMMIT, copies dataplane/fuzz into it with the module paths of
# that layout (policy.rs at the crate root, the configuration in the data plane crate), and
# runs scripts/fuzz.sh there, starting from the seeds minus the committed crash inputs (named
# crash-<commit>-*), so every finding is the fuzzer's own. Same variables as scripts/fuzz.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
commit=${1:-e8fada8}
tree=${2:-/tmp/roomcast-fuzz-old}

if [[ ! -d $tree ]]; then
  git worktree add --detach "$tree" "$commit" >&2
fi
old=$tree/dataplane/fuzz
rm -rf "$old"
mkdir -p "$old"
cp -r dataplane/fuzz/Cargo.toml dataplane/fuzz/src dataplane/fuzz/fuzz_targets dataplane/fuzz/dict "$old/"
mkdir -p "$old/seeds"
for dir in dataplane/fuzz/seeds/*/; do
  target=$(basename "$dir")
  mkdir -p "$old/seeds/$target"
  find "$dir" -maxdepth 1 -type f ! -name 'crash-*' -exec cp {} "$old/seeds/$target/" \;
done
# The old layout: no roomcast-config crate, policy at the crate root.
sed -i '/^roomcast-config = /d' "$old/Cargo.toml"
sed -i -e 's/^use roomcast_config::Config;/use roomcast_dataplane::config::Config;/' \
  -e 's/roomcast_dataplane::app::policy::/roomcast_dataplane::policy::/' \
  -e 's|Ok(eio::records(body)?.collect()) // fuzz-old: lazy|Ok(eio::decode_payload(body)?.into_iter().map(Ok).collect())|' \
  "$old/src/targets.rs"
# Resolve from the old tree's lockfile, so the old code builds with its own dependencies.
cp "$tree/Cargo.lock" "$old/Cargo.lock"

# A corpus of its own: one grown on newer code would hand the fuzzer its findings.
target_dir=${CARGO_TARGET_DIR:-$root/target/fuzz}
FUZZ_DIR=$old FUZZ_WORK=${FUZZ_WORK:-$target_dir/fuzz-work-$commit} bash "$root/scripts/fuzz.sh"
