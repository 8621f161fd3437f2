#!/usr/bin/env bash
# Installs what Crops' build and tests need on Debian, only when missing:
# Podman with runc (crun fails on these hosts), busybox-static for the test
# image, clang and musl-tools for the static agents, qemu-user-static to run
# the aarch64 agent, and the rustup targets. Writes nothing under /etc; Podman
# is configured through CONTAINERS_CONF (tests/podman/containers.conf).
set -euo pipefail

packages=(podman runc busybox-static clang musl-tools qemu-user-static file openssl ca-certificates)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
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
