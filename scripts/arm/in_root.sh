#!/usr/bin/env bash
# Run a command in an emulated root: in_root.sh NAME [VAR=VALUE ...] -- CMD [ARG ...]
# VAR=VALUE pairs (e.g. QEMU_CPU=arm1176) make the whole environment inside the
# root, which starts empty otherwise. Private mount and PID namespaces: /proc,
# /dev, a fresh /dev/shm and /tmp exist only for the command, and every process
# it leaves behind dies with it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
name=$1
shift
root_params "$name"
[ -f "$ROOT/.edge-actors-recipe" ] || {
	echo "root $name is not built: scripts/arm/build_root.sh $name" >&2
	exit 1
}
ensure_binfmt
vars=(PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8
	PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1)
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
	vars+=("$1")
	shift
done
shift
# QEMU_CPU etc. must already be set when chroot starts the root's first ARM binary.
exec env "${vars[@]}" /usr/bin/unshare --mount --pid --fork --propagation private \
	/bin/bash -euc '
		root=$1
		shift
		ulimit -c 0  # no qemu core files in the root
		mount -t proc proc "$root/proc"
		mount -t sysfs -o ro sysfs "$root/sys"
		mount --bind /dev "$root/dev"
		mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
		mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
		# Not exec: the command must not be PID 1, which ignores every signal it has no
		# handler for (qemu re-raising SIGILL, SIGTERM from a test); bash reaps orphans.
		/usr/sbin/chroot "$root" /usr/bin/env -i "$@"
	' _ "$ROOT" "${vars[@]}" "$@"
