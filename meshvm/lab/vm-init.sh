#!/bin/bash
# PID 1 of a lab VM's new pid+mount+uts+ipc+cgroup namespaces, already inside the VM's netns.
# usage: vm-init.sh STATE_DIR HOSTNAME
# Builds an overlay root over the host's / (STATE_DIR/upper gets every write; the host seeded it
# with host keys, machine-id, metadata and the stand-in units), a private /dev, pure cgroup2 at
# /sys/fs/cgroup, then pivots into it and execs systemd.
set -euo pipefail
S=$1; HN=$2; M=$S/merged
mkdir -p "$S/upper" "$S/work" "$M"
mount -t overlay overlay -o "lowerdir=/,upperdir=$S/upper,workdir=$S/work" "$M"
mount -t proc proc "$M/proc"
# A booting kernel has no packet filter rules: those of the VM's previous boot go (its own netns only).
for t in nat mangle filter; do iptables -w 5 -t "$t" -F; iptables -w 5 -t "$t" -X; done
# The kernel's global state is the host's: read-only here, as container managers do (the VM needs
# none of its own netns keys; the lab sets those from outside). /sys is read-only too.
for p in sys sysrq-trigger; do
  if [ -e "$M/proc/$p" ]; then mount --bind "$M/proc/$p" "$M/proc/$p"; mount -o remount,bind,ro "$M/proc/$p"; fi
done
# Every boot has its own boot id (a rebooted VM comes back with a new one), as systemd-nspawn does it:
# a fresh id over the kernel's, which is the host's.
cat /proc/sys/kernel/random/uuid > "$S/boot_id"
mount --bind "$S/boot_id" "$M/proc/sys/kernel/random/boot_id"
mount -t sysfs -o ro sysfs "$M/sys"      # mounted in the VM's netns: shows only its interfaces
# pure cgroup2 => systemd runs "unified" and never touches the host's v1 hierarchies; the cgroupns
# root is the subtree the launcher was moved into
mount -t cgroup2 cgroup2 "$M/sys/fs/cgroup"
# private /dev: with the host's, systemd would start gettys on the host's console
mount -t tmpfs -o mode=755,nosuid tmpfs "$M/dev"
for d in null zero full random urandom tty; do touch "$M/dev/$d"; mount --bind "/dev/$d" "$M/dev/$d"; done
touch "$M/dev/console"; mount --bind /dev/null "$M/dev/console"
mkdir -p "$M/dev/pts" "$M/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$M/dev/pts"
ln -s pts/ptmx "$M/dev/ptmx"; mount -t tmpfs -o mode=1777 tmpfs "$M/dev/shm"
ln -s /proc/self/fd "$M/dev/fd"; ln -s /proc/self/fd/0 "$M/dev/stdin"
ln -s /proc/self/fd/1 "$M/dev/stdout"; ln -s /proc/self/fd/2 "$M/dev/stderr"
mount -t tmpfs -o mode=755 tmpfs "$M/run"
mount -t tmpfs -o mode=1777 tmpfs "$M/tmp"
# the host's private trees are not the VM's business
for d in /work /mnt /root; do if [ -d "$M$d" ]; then mount -t tmpfs -o mode=700 tmpfs "$M$d"; fi; done
hostname "$HN"; echo "$HN" > "$M/etc/hostname"
# else sudo hangs ~20 s; written at the first boot only: a reboot keeps what the VM wrote there
[ -e "$S/upper/etc/hosts" ] || printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$HN" > "$M/etc/hosts"
rm -f "$M/etc/resolv.conf"; echo "nameserver 127.0.0.1" > "$M/etc/resolv.conf"  # no DNS: fail fast
W=$M/etc/systemd/system
# Masked: consoles, timers, and every unit that writes the kernel's global state (sysctls, binfmt
# handlers, modules, udev, kernel filesystems, AppArmor profiles, the entropy pool).
masked="console-getty.service serial-getty@.service getty@.service container-getty@.service getty.target
        systemd-timesyncd.service systemd-pstore.service postgresql.service e2scrub_reap.service timers.target
        $(cat "$(dirname "$0")/vm-masked-kernel-units")"
for t in "$M"/lib/systemd/system/*.timer "$W"/timers.target.wants/*.timer; do
  if [ -e "$t" ]; then masked="$masked ${t##*/}"; fi; done
for u in $masked; do ln -sf /dev/null "$W/$u"; done
mkdir -p "$M/.oldroot"; cd "$M"; pivot_root . .oldroot; cd /
umount -l /.oldroot; rmdir /.oldroot 2>/dev/null || true
rm -f /etc/ssh/ssh_host_rsa_key /etc/ssh/ssh_host_rsa_key.pub   # the host's; the VM has its own
export container=lab-vm
exec /lib/systemd/systemd --system --show-status=no
