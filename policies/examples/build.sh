#!/usr/bin/env bash
# Build the example policies in other languages into components:
#   policies/dist/examples/python.wasm  (python/app.py, componentize-py)
#   policies/dist/examples/js.wasm      (js/policy.js, componentize-js)
# each with its language's SDK (policies/sdk), which decodes a placement's
# packed candidates into plain worker records.
#
# They are not embedded in the orchestrator: an operator uploads such a
# module, and the orchestrator's tests run them against the same
# conformance cases as the Rust stock policies (orchestrator/tests/
# policy_languages.rs). `make policy-examples` runs this (a dependency of make test and make bench).
#
# The toolchains are pinned and cached under policies/.tools (git-ignored):
# componentize-py from PyPI (pip --target), componentize-js from npm (`npm
# ci` against js/package-lock.json). The first run downloads them (about 20
# MB and 400 MB); later runs reuse them and rebuild a component only when
# its source, the WIT or this script is newer than it.
set -euo pipefail
cd "$(dirname "$0")"
EXAMPLES="$PWD"
SELF="$EXAMPLES/$(basename "$0")"
POLICIES="$(cd .. && pwd)"
TOOLS="$POLICIES/.tools"
OUT="$POLICIES/dist/examples"
WIT="$POLICIES/wit"
SDK="$POLICIES/sdk"

COMPONENTIZE_PY_VERSION=0.25.1

need() {
    command -v "$1" >/dev/null || { echo "examples/build.sh: $1 is missing (make deps installs it)" >&2; exit 1; }
}

# Whether $1 is missing or older than any of the remaining paths.
stale() {
    local out="$1"
    shift
    [[ -f "$out" ]] || return 0
    [[ -n "$(find "$@" -newer "$out" -print -quit)" ]]
}

# componentize-py into its own versioned directory (pip --target puts
# scripts in bin/, which it will not add to an existing directory).
componentize_py() {
    local dir="$TOOLS/componentize-py-$COMPONENTIZE_PY_VERSION"
    if [[ ! -d "$dir/componentize_py" ]]; then
        need python3
        python3 -m pip install --quiet --disable-pip-version-check --target "$dir.tmp" \
            "componentize-py==$COMPONENTIZE_PY_VERSION"
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
    fi
    PYTHONPATH="$dir" python3 -c 'import sys; from componentize_py import script; sys.exit(script())' "$@"
}

# componentize-js from js/package-lock.json, installed in .tools/js.
componentize_js() {
    local dir="$TOOLS/js"
    if ! cmp -s "$EXAMPLES/js/package-lock.json" "$dir/package-lock.json" \
        || [[ ! -x "$dir/node_modules/.bin/componentize-js" ]]; then
        need npm
        rm -rf "$dir" && mkdir -p "$dir"
        cp "$EXAMPLES/js/package.json" "$EXAMPLES/js/package-lock.json" "$dir/"
        (cd "$dir" && npm ci --silent --no-audit --no-fund)
    fi
    "$dir/node_modules/.bin/componentize-js" "$@"
}

mkdir -p "$OUT"

# The SDK (sdk/python/crops_policy.py) decodes the packed candidates.
if stale "$OUT/python.wasm" python "$SDK/python" "$WIT" "$SELF"; then
    PYTHONDONTWRITEBYTECODE=1 componentize_py -d "$WIT" -w policy componentize \
        -p python -p "$SDK/python" app -o "$OUT/python.wasm.tmp" >/dev/null
    mv "$OUT/python.wasm.tmp" "$OUT/python.wasm"
fi
echo "policies/dist/examples/python.wasm: $(stat -c %s "$OUT/python.wasm") bytes"

# `-d http fetch-event`: no wasi:http imports, which the host does not grant.
# Run from policies/, so the example's import of the SDK
# (sdk/js/crops-policy.js) lies inside the directory componentize-js maps.
if stale "$OUT/js.wasm" js/policy.js js/package-lock.json "$SDK/js" "$WIT" "$SELF"; then
    (cd "$POLICIES" && componentize_js examples/js/policy.js --wit "$WIT" --world-name policy \
        --disable http fetch-event --out "$OUT/js.wasm.tmp" >/dev/null)
    mv "$OUT/js.wasm.tmp" "$OUT/js.wasm"
fi
echo "policies/dist/examples/js.wasm: $(stat -c %s "$OUT/js.wasm") bytes"
