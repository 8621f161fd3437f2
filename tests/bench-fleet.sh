#!/usr/bin/env bash
# `make bench`, orchestrator at scale (BENCHMARKS.md, issues 4 and 14), one
# run printing Markdown (tests/benches/scale/main.rs says it all):
#   * durable API writes (join tokens at 1, 16, 64 clients; enrolment at
#     64) over TLS keep-alive, a column per topology: redb (one
#     orchestrator, --data), pg1 (one on PostgreSQL, fsync on), pg3 (three
#     replicas on one PostgreSQL behind HAProxy); CROPS_SCALE_TOPOLOGIES
#     selects (default redb,pg1,pg3);
#   * a SIMULATED FLEET: CROPS_FLEET_AGENTS real TLS WebSocket agents
#     (default 30,000 over pg3's replicas, directly; 10,000 on one
#     orchestrator when pg3 is not selected), each with its own credential,
#     heartbeating every 10 s, held CROPS_FLEET_HOLD_SECS (default 60);
#   * on pg3, kill -9 of the replica holding a third of them: the time
#     until all of them are registered on the other two.
# The sandbox's hard open-files limit is 20,000 per process: the fleet runs
# in child processes of at most 15,000 agents, the replicas each hold their
# share (half the fleet on a survivor after the kill), and the soft limit
# is raised to the hard one here (inherited by all of them).
# CROPS_NO_BUILD=1 reuses target/release/crops-orchestrator.
# Example, small: CROPS_FLEET_AGENTS=3000 CROPS_WRITES=300 CROPS_FLEET_HOLD_SECS=5 tests/bench-fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
topologies="${CROPS_SCALE_TOPOLOGIES:-redb,pg1,pg3}"
if [[ ",$topologies," == *,pg3,* ]]; then
    # The busiest process: a survivor after the failover (half the fleet)
    # or a fleet child (at most 15,000 agents).
    agents="${CROPS_FLEET_AGENTS:-30000}"
    survivor=$(( (agents + 1) / 2 ))
    child=$(( agents < 15000 ? agents : 15000 ))
    most=$(( survivor > child ? survivor : child ))
else
    agents="${CROPS_FLEET_AGENTS:-10000}"
    most=$agents
fi
need=$(( most + 1000 ))
if (( $(ulimit -n) < need )); then
    echo "open-files limit $(ulimit -n) is below the $need this run needs ($agents agents)" >&2
    exit 1
fi
[[ -n "${CROPS_NO_BUILD:-}" ]] || cargo build --release --workspace --bins
export CROPS_ORCHESTRATOR_BIN="${CROPS_ORCHESTRATOR_BIN:-$PWD/target/release/crops-orchestrator}"
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -m), $(. /etc/os-release; echo "$PRETTY_NAME")"
cargo bench --workspace --bench scale
