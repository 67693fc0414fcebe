#!/bin/busybox sh
# restation VM bench, initrd stage: load the drivers the root needs (listed in /modules.load,
# dependencies first, decompressed on the host), mount the root disk and the run directory
# shared by the host over 9p, then hand over to the bench script on that share as PID 1.
/bin/busybox --install -s /bin
export PATH=/bin

fatal() {
    echo "@@ FAIL initrd $*"
    echo "@@ DONE"
    poweroff -f
}

mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

while read -r module; do
    insmod "/lib/modules/$module" || echo "bench-initrd: insmod $module failed"
done < /modules.load

# virtio-blk probes during insmod; give the block device a deadline all the same.
tries=0
while [ ! -b /dev/vda ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 200 ] && fatal "no /dev/vda after 10 s"
    sleep 0.05
done

mount -t ext4 -o rw,noatime /dev/vda /newroot || fatal "cannot mount /dev/vda (ext4)"
mkdir -p /newroot/bench
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none bench /newroot/bench \
    || fatal "cannot mount the 9p share 'bench'"
[ -f /newroot/bench/guest.sh ] || fatal "no guest.sh on the 9p share"

mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /bin/bash /bench/guest.sh
