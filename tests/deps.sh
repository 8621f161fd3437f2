#!/usr/bin/env bash
# Installs what Crops' build and tests need on Debian, only when missing:
# Podman with runc (crun fails on these hosts), uidmap and slirp4netns for
# the rootless agent's Podman (the suite runs agents as the user
# crops-rootless too: tests/support/rootless.rs), busybox-static for the test
# image, clang and musl-tools for the static agents, qemu-user-static to run
# the aarch64 agent, chromium for the terminal page's browser tests (with
# playwright-core and the xterm packages from tests/browser's lock file),
# postgresql for the store's PostgreSQL engine (the tests start their own
# server from its binaries, /usr/lib/postgresql/*/bin), haproxy for the
# balancer in front of several replicas (the replicas test, `make
# replicas`), tinyproxy for the agent behind a proxy (its own instance,
# started by the test), mitmproxy as an office's TLS-inspecting proxy, curl
# for the egress tests' image, systemd for
# `systemd-analyze verify` of the agent's service unit, and the rustup
# targets. Writes nothing under /etc (the test rig itself adds
# crops-rootless and its subordinate ids, and the egress tests' names to
# /etc/hosts); Podman is configured through CONTAINERS_CONF
# (tests/podman/containers.conf).
set -euo pipefail

packages=(podman runc uidmap slirp4netns busybox-static clang musl-tools qemu-user-static file openssl ca-certificates chromium postgresql haproxy tinyproxy mitmproxy curl systemd)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# The example policies (policies/examples/build.sh): componentize-py via pip.
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
installed="$(rustup target list --installed)"
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

# playwright-core needs Node.js 20 or newer.
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || {
    echo "error: node $(node --version) is too old for tests/browser (needs 20 or newer)" >&2
    exit 1
}
browser="$(dirname "$0")/browser"
# `npm ci` only when the lock file changed since the last install.
if ! cmp -s "$browser/package-lock.json" "$browser/node_modules/.crops-installed-lock" 2>/dev/null; then
    (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$browser/package-lock.json" "$browser/node_modules/.crops-installed-lock"
fi
