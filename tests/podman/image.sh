#!/usr/bin/env bash
# Builds the local test images with no registry: a rootfs tarred and fed to
# `podman import`. `localhost/crops-test/busybox:latest` holds busybox-static
# and its applet links; `localhost/crops-test/curl:latest` adds Debian's curl
# with the shared libraries it loads (the egress tests' and bench's client:
# it speaks HTTP and HTTPS through HTTPS_PROXY, as real tools do).
# Idempotent: does nothing for an image that exists.
# Needs CONTAINERS_CONF pointing at tests/podman/containers.conf.
set -euo pipefail

IMAGE="${CROPS_TEST_IMAGE:-localhost/crops-test/busybox:latest}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"

CURL_IMAGE="${CROPS_CURL_IMAGE:-localhost/crops-test/curl:latest}"

# build IMAGE WITH_CURL
build() {
    local image="$1" with_curl="$2"
    if podman image exists "$image"; then
        echo "image $image present"
        return 0
    fi
    file -L "$BUSYBOX" | grep -q 'statically linked' || {
        echo "error: $BUSYBOX is not a static binary (apt-get install busybox-static)" >&2
        exit 1
    }

    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,workspace,proc,sys,dev}
    chmod 1777 "$root/tmp"
    cp "$BUSYBOX" "$root/bin/busybox"
    for applet in $("$BUSYBOX" --list-full); do
        [ "$applet" = "bin/busybox" ] && continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -sf /bin/busybox "$root/$applet"
    done
    if [ "$with_curl" = yes ]; then
        command -v curl >/dev/null || { echo "error: curl is missing (apt-get install curl)" >&2; exit 1; }
        cp -L "$(command -v curl)" "$root/usr/bin/curl"
        for lib in $(ldd "$(command -v curl)" | grep -o '/[^ ]*'); do
            mkdir -p "$root/$(dirname "$lib")"
            cp -L "$lib" "$root/$lib"
        done
    fi
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -cf "$root.tar" .
    podman import --quiet --change 'CMD ["/bin/sh"]' --change 'WORKDIR /workspace' \
        --message "crops test image: busybox-static" "$root.tar" "$image" >/dev/null
    rm -rf "$root.tar" "$root"
    echo "image $image built"
}

build "$IMAGE" no
build "$CURL_IMAGE" yes
