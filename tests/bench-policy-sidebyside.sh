#!/usr/bin/env bash
# The policy benchmark (orchestrator/benches/policy.rs, `--stock`: placement
# over 1,000 workers, admission, fresh-instance p50/p99) of older commits and
# of this tree, built apart and run alternately on one core, so the figures
# share one machine state instead of comparing runs hours apart.
#
#   tests/bench-policy-sidebyside.sh [COMMIT...]   (default: 3650242)
#
# Each COMMIT is checked out once in its own detached git worktree
# ($SIDEBYSIDE_DIR/<commit>/wt) and built in its own target dir
# ($SIDEBYSIDE_DIR/<commit>/target): its stock policies with its own
# policies/build.sh (a bench embeds policies/dist/*.wasm of its own tree, whose
# contract version it speaks), then its bench in release. The bench source of
# this tree is copied into each old worktree first (set CROPS_KEEP_BENCH=1 not
# to), so every side runs the same measurement code; the bench's API has not
# changed since 3650242. This tree is built in $CARGO_TARGET_DIR (or target/)
# from its own policies/dist (`make policies` first).
#
# Environment: SIDEBYSIDE_DIR (default ${TMPDIR:-/tmp}/crops-policy-sidebyside),
# ROUNDS (default 3), BUILD_PREFIX (prefixed to every build, e.g. `chrt -i 0`
# on a shared machine), RUN_PREFIX (prefixed to every measurement, default
# `taskset -c 0`; e.g. `taskset -c 0 nice -n -5`).
#
# Recorded run (issue 13, point 6; 2 cores, other jobs at idle priority):
#   SIDEBYSIDE_DIR=/work/tgt-pol-old BUILD_PREFIX="chrt -i 0" \
#   RUN_PREFIX="taskset -c 0 nice -n -5" \
#   tests/bench-policy-sidebyside.sh 3650242 99f4312
# gave, 2026-12-06 21:12 UTC, on a busy machine (load 6-7: other builds at
# idle priority on both cores; absolute rates are low, compare the columns),
# decisions/s over 1,000 workers, rounds 1/2/3, then fresh-instance p99:
#   least-loaded  3650242 5065/4802/4699   99f4312 4470/4246/4366
#   binpack       3650242 4676/4525/4396   99f4312 4493/4136/4139
#   spread        3650242 4758/4653/4544   99f4312 4534/3910/4298
#   p99 plan-limits / least-loaded, us: 3650242 12.1-12.6 / 13.0-13.9,
#                                       99f4312 11.6-12.2 / 12.8-13.6
# Placement is 6-10 % slower on the bindgen host (the generic lifting of
# 1,000 `verdict` records); the fresh instance, whose code did not change,
# is the same side by side. BENCHMARKS.md keeps the figures it records.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DIR="${SIDEBYSIDE_DIR:-${TMPDIR:-/tmp}/crops-policy-sidebyside}"
ROUNDS="${ROUNDS:-3}"
read -r -a BUILD <<<"${BUILD_PREFIX:-}"
read -r -a RUN <<<"${RUN_PREFIX:-taskset -c 0}"
COMMITS=("$@")
[[ ${#COMMITS[@]} -gt 0 ]] || COMMITS=(3650242)

# The bench executable of the tree at $1 built in target dir $2 (printed).
build_bench() {
    local tree="$1" target="$2"
    (cd "$tree" && CARGO_TARGET_DIR="$target" "${BUILD[@]}" cargo bench --workspace \
        --bench policy --no-run --message-format=json-render-diagnostics) |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "policy" \
            and m.get("executable"):
        print(m["executable"])'
}

NAMES=() BINS=()
for c in "${COMMITS[@]}"; do
    short="$(git rev-parse --short=7 "$c^{commit}")"
    wt="$DIR/$short/wt" target="$DIR/$short/target"
    mkdir -p "$DIR/$short"
    if [[ ! -d "$wt" ]]; then
        git worktree add --detach "$wt" "$short" >&2
    fi
    [[ -n "${CROPS_KEEP_BENCH:-}" ]] || cp orchestrator/benches/policy.rs "$wt/orchestrator/benches/policy.rs"
    # wasm-tools (and the language toolchains) as this tree has them, so the
    # old tree's build.sh installs nothing.
    [[ -d "$wt/policies/.tools" || ! -d policies/.tools ]] || cp -a policies/.tools "$wt/policies/"
    # Its stock policies once (build.sh rewrites dist/, which would rebuild
    # the orchestrator each time); remove $wt/policies/dist to build again.
    if [[ ! -f "$wt/policies/dist/spread.wasm" ]]; then
        echo "building $short: stock policies" >&2
        (cd "$wt/policies" && CARGO_TARGET_DIR="$target/policies" "${BUILD[@]}" ./build.sh >&2)
    fi
    echo "building $short: the bench" >&2
    NAMES+=("$short") BINS+=("$(build_bench "$wt" "$target")")
done
echo "building this tree ($(git rev-parse --short=7 HEAD)$(git diff --quiet HEAD -- orchestrator policies || echo +changes))" >&2
NAMES+=(this) BINS+=("$(build_bench "$ROOT" "${CARGO_TARGET_DIR:-$ROOT/target}")")

for i in "${!BINS[@]}"; do
    [[ -x "${BINS[$i]}" ]] || { echo "no bench executable for ${NAMES[$i]}" >&2; exit 1; }
done

for r in $(seq 1 "$ROUNDS"); do
    for i in "${!BINS[@]}"; do
        echo "== round $r: ${NAMES[$i]}"
        # Relative paths in the bench resolve from its crate, as under cargo.
        (cd "$(dirname "${BINS[$i]}")" && "${RUN[@]}" "${BINS[$i]}" --stock)
    done
done
