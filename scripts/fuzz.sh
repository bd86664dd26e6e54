#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain: cargo-fuzz (libFuzzer) with
# `--sanitizer none`, which needs no nightly. Installs cargo-fuzz (pinned) into a cache
# outside the checkout, builds every target once, then runs each for FUZZ_SECONDS.
# See docs/fuzzing.md.
#
#   FUZZ_SECONDS   seconds per target (default 20)
#   FUZZ_TARGETS   targets to run, space separated (default: all of dataplane/fuzz/fuzz_targets)
#   FUZZ_DIR       the fuzz crate (default dataplane/fuzz; another for a copy against old code)
#   FUZZ_JOBS      parallel fuzzing processes per target (default 1)
#   CARGO_TARGET_DIR  where the instrumented build goes (default target/fuzz)
#   FUZZ_WORK      where the grown corpus, crash inputs and logs go (default
#                  $CARGO_TARGET_DIR/fuzz-work), never the checkout
#
# Exits non-zero when a target found something; the input is left under
# $FUZZ_WORK/artifacts/<target>/ (replay: the fuzz binary with the file as argument).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

CARGO_FUZZ_VERSION=0.13.2
fuzz_dir=$(realpath "${FUZZ_DIR:-dataplane/fuzz}")
seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-1}
target_dir=${CARGO_TARGET_DIR:-$root/target/fuzz}
work=${FUZZ_WORK:-$target_dir/fuzz-work}
tools=${XDG_CACHE_HOME:-$HOME/.cache}/roomcast/tools/cargo-fuzz-$CARGO_FUZZ_VERSION

if [[ ! -x $tools/bin/cargo-fuzz ]]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools (a few minutes, once)" >&2
  # cargo-fuzz's own build goes to a scratch directory, not the project's target.
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  nice -n 10 cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" \
    --root "$tools" --target-dir "$scratch"
fi
export PATH=$tools/bin:$PATH

if [[ -n ${FUZZ_TARGETS:-} ]]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cd "$fuzz_dir/fuzz_targets" && ls -- *.rs | sed 's/\.rs$//')
fi

# Instrumented (SanitizerCoverage), optimized, with debug assertions and overflow checks
# (cargo-fuzz's defaults); no sanitizer, so no nightly flag.
build=(--sanitizer none --features libfuzzer --codegen-units 16
  --target-dir "$target_dir" --fuzz-dir "$fuzz_dir")
cd "$fuzz_dir/.."
echo "fuzz: building ${targets[*]}" >&2
nice -n 10 cargo fuzz build "${build[@]}"

found=()
for target in "${targets[@]}"; do
  corpus=$work/corpus/$target   # grows here, not in the checkout
  artifacts=$work/artifacts/$target
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  [[ -d $fuzz_dir/seeds/$target ]] && seeds+=("$fuzz_dir/seeds/$target")
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -malloc_limit_mb=1024
    -print_final_stats=1 -artifact_prefix="$artifacts/")
  [[ -f $fuzz_dir/dict/$target.dict ]] && args+=(-dict="$fuzz_dir/dict/$target.dict")
  if ((jobs > 1)); then
    args+=(-fork="$jobs" -ignore_crashes=0)
  fi
  echo "fuzz: $target for ${seconds}s" >&2
  log=$work/$target.log
  if nice -n 10 cargo fuzz run "${build[@]}" "$target" "$corpus" "${seeds[@]}" -- "${args[@]}" \
    >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" \
      | sed "s/^/fuzz: $target: /" >&2 || true
  else
    found+=("$target")
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | sed "s/^/fuzz: $target: /" >&2 || true
    echo "fuzz: $target: full log in $log" >&2
  fi
done

if ((${#found[@]})); then
  echo "fuzz: findings in ${found[*]} (inputs under $work/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, nothing found" >&2
