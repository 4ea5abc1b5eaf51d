#!/bin/busybox sh
# Stage 1, inside the initramfs: load the modules needed to reach the root
# over 9p, build a writable root (read-only 9p lower + tmpfs upper), mount the
# host shares at their host paths, and hand over to stage 2 in the new root.
bb=/bin/busybox
fail() { echo "twtrace-init: $*" >/dev/console; $bb sleep 1; $bb poweroff -f; }
$bb mkdir -p /proc /sys /dev /lower /rw /newroot
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
for m in $($bb cat /modules/order); do
    $bb insmod /modules/$m.ko 2>/dev/null
done
opts=trans=virtio,version=9p2000.L,msize=512000
if $bb grep -q twtrace.rootrw=1 /proc/cmdline; then
    # The builder's one-time boot writes into the root itself (byte-compiling).
    $bb mount -t 9p -o $opts,cache=none root /newroot || fail "cannot mount the root share"
else
    $bb mount -t 9p -o $opts,ro,cache=loose root /lower || fail "cannot mount the root share"
    $bb mount -t tmpfs -o mode=0755 tmpfs /rw || fail "tmpfs"
    $bb mkdir -p /rw/upper /rw/work
    $bb mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
        || fail "cannot mount the overlay root"
fi
# /tmp before the shares: a shared directory may live under it (pytest's tmp_path).
$bb mkdir -p /newroot/tmp && $bb mount -t tmpfs tmpfs /newroot/tmp
stage2=
for arg in $($bb cat /proc/cmdline); do
    case "$arg" in
    twtrace.share=*)
        spec=${arg#twtrace.share=}; tag=${spec%%:*}; path=${spec#*:}
        $bb mkdir -p "/newroot$path"
        $bb mount -t 9p -o $opts,cache=none "$tag" "/newroot$path" || fail "cannot mount share $tag"
        ;;
    twtrace.stage2=*) stage2=${arg#twtrace.stage2=} ;;
    esac
done
[ -n "$stage2" ] || fail "no twtrace.stage2 on the kernel command line"
[ -e /newroot/bin/sh ] || $bb ln -s busybox /newroot/bin/sh
$bb umount /proc /sys
$bb mount --move /dev /newroot/dev
exec $bb switch_root /newroot /bin/busybox sh "$stage2"
