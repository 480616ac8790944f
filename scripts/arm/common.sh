# Shared settings for the emulated ARM roots (sourced, not run).
# The roots live outside the checkout: one build is reused by every run and worktree.
ARM_CACHE=${EDGE_ACTORS_ARM_CACHE:-$HOME/.cache/edge-actors/arm-roots}
ARM_MIRROR=${EDGE_ACTORS_ARM_MIRROR:-http://deb.debian.org/debian}

# name -> Debian architecture, suite and interpreter.
#   aarch64: ARMv8 64-bit (Pi 3/4/5 with a 64-bit OS, Jetson), wheels from PyPI.
#   armv7:   32-bit hard-float (Raspberry Pi OS 32-bit, arm32v7 containers), PyPI
#            wheels where PyPI has armv7l ones, Debian's numpy/psutil/PyYAML otherwise.
#   armv6:   Debian armel (ARMv5TE baseline: the only Debian userland an ARM1176 can
#            run; Debian armhf is ARMv7/Thumb-2 code), run with QEMU_CPU=arm1176 like a
#            Pi Zero / Pi 1. Same packages as armv7; orjson has no armel wheel or
#            Debian package, so the agent runs on the standard library's json here
#            (edge_actors.jsoncompat, one WARNING at start).
root_params() {
	case "$1" in
	aarch64) DEB_ARCH=arm64 SUITE=bookworm QEMU=qemu-aarch64 ;;
	armv7) DEB_ARCH=armhf SUITE=bookworm QEMU=qemu-arm ;;
	armv6) DEB_ARCH=armel SUITE=bookworm QEMU=qemu-arm ;;
	*) echo "unknown root '$1' (aarch64, armv7, armv6)" >&2; return 2 ;;
	esac
	ROOT=$ARM_CACHE/$1
}

# binfmt_misc must know the ARM ELF magic so that the kernel hands ARM binaries
# (in the root and every process they start) to qemu-user.
ensure_binfmt() {
	local q
	if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	fi
	for q in qemu-aarch64 qemu-arm; do
		if [ ! -e "/proc/sys/fs/binfmt_misc/$q" ]; then
			# The F flag opens the interpreter now, so the root needs no copy of qemu.
			cat "/usr/lib/binfmt.d/$q.conf" >/proc/sys/fs/binfmt_misc/register
		fi
		[ "$(head -1 "/proc/sys/fs/binfmt_misc/$q")" = enabled ] || {
			echo "binfmt entry $q is disabled" >&2
			return 1
		}
	done
}
