#!/usr/bin/env bash
# Builds the local test image `localhost/crops-test/busybox:latest` with no
# registry: a rootfs holding busybox-static and its applet links, tarred and
# fed to `podman import`. Idempotent: does nothing when the image exists.
# Needs CONTAINERS_CONF pointing at tests/podman/containers.conf.
set -euo pipefail

IMAGE="${CROPS_TEST_IMAGE:-localhost/crops-test/busybox:latest}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"

if podman image exists "$IMAGE"; then
    echo "image $IMAGE present"
    exit 0
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
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
tar -C "$root" -cf "$root.tar" .
podman import --quiet --change 'CMD ["/bin/sh"]' --change 'WORKDIR /workspace' \
    --message "crops test image: busybox-static" "$root.tar" "$IMAGE" >/dev/null
rm -f "$root.tar"
echo "image $IMAGE built"
