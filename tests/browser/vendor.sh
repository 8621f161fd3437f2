#!/usr/bin/env bash
# Refreshes orchestrator/web/vendor/ from the xterm packages pinned in
# package.json (run `npm ci` here first). The orchestrator embeds those files
# and serves them at /ui/; nothing is built at test or run time.
set -euo pipefail
cd "$(dirname "$0")"
src=node_modules/@xterm
out=../../orchestrator/web/vendor
[[ -f $src/xterm/lib/xterm.js && -f $src/addon-fit/lib/addon-fit.js ]] || {
    echo "run npm ci in $(pwd) first" >&2
    exit 1
}
# The source maps are not vendored, so their trailing pointer goes too.
strip_map() { sed '/^\/\/# sourceMappingURL=/d' "$1" >"$2"; }
strip_map "$src/xterm/lib/xterm.js" "$out/xterm.js"
strip_map "$src/addon-fit/lib/addon-fit.js" "$out/addon-fit.js"
cp "$src/xterm/css/xterm.css" "$out/xterm.css"
{
    echo "@xterm/xterm $(node -p "require('./$src/xterm/package.json').version") (xterm.js, xterm.css):"
    echo
    cat "$src/xterm/LICENSE"
    echo
    echo "-----"
    echo
    echo "@xterm/addon-fit $(node -p "require('./$src/addon-fit/package.json').version") (addon-fit.js):"
    echo
    cat "$src/addon-fit/LICENSE"
} >"$out/LICENSE.xterm"
echo "vendored: $(ls "$out")"
