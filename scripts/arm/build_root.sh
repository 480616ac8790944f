#!/usr/bin/env bash
# Build (once) an emulated Debian root for `make test-arm`: build_root.sh aarch64|armv7|armv6
# Cached in $ARM_CACHE/<name>; rebuilt only when this recipe changes. Needs root,
# debootstrap, qemu-user-static, and network access to the Debian mirror and PyPI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
name=$1
root_params "$name"
for tool in debootstrap "$QEMU-static"; do
	command -v "$tool" >/dev/null || {
		echo "$tool missing: apt-get install -y qemu-user-static debootstrap binfmt-support" >&2
		exit 1
	}
done
ensure_binfmt

base=python3,python3-venv
case "$name" in
aarch64) pkgs=$base ;;
# PyPI has no armv7l wheels for numpy, psutil or PyYAML (and piwheels is not
# always reachable): a board would build them from source or take Debian's.
armv7 | armv6) pkgs=$base,python3-numpy,python3-psutil,python3-yaml ;;
esac

pip_deps="setuptools>=77 pytest>=7.4 pytest-timeout>=2.2 hypothesis>=6.90 boto3>=1.28"
case "$name" in
aarch64) pip_deps="$pip_deps numpy>=1.24 psutil>=5.9 PyYAML>=6.0 orjson>=3.9" ;;
armv7) pip_deps="$pip_deps orjson>=3.9" ;;
esac
# Rebuilt only when what goes in changes (bump v1 to force a rebuild).
recipe="v1 $SUITE $DEB_ARCH $pkgs $pip_deps"
if [ "$(cat "$ROOT/.edge-actors-recipe" 2>/dev/null)" = "$recipe" ]; then
	echo "$name: cached root $ROOT"
	exit 0
fi
tmp=$ROOT.tmp
rm -rf "$tmp"
mkdir -p "$ARM_CACHE"
echo "$name: debootstrap $SUITE/$DEB_ARCH into $tmp"
debootstrap --foreign --arch="$DEB_ARCH" --variant=minbase --include="$pkgs" "$SUITE" "$tmp" "$ARM_MIRROR"
# The second stage runs the root's own dpkg, under qemu.
# In a private mount namespace: whatever it mounts (proc, sys) goes away with it.
unshare --mount --propagation private chroot "$tmp" /debootstrap/debootstrap --second-stage
cp /etc/resolv.conf "$tmp/etc/resolv.conf"
# pip inside the root must trust whatever CA the host trusts (proxies, mirrors).
mkdir -p "$tmp/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$tmp/etc/ssl/certs/host-ca.crt"

unshare --mount --propagation private chroot "$tmp" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
	PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
	/bin/sh -euc "
		python3 -m venv --system-site-packages /opt/venv
		/opt/venv/bin/pip install -q --only-binary=:all: $pip_deps
		/opt/venv/bin/python -c 'import numpy, psutil, yaml, pytest, hypothesis, pytest_timeout'
		/opt/venv/bin/python -c 'import sys, numpy; print(sys.version.split()[0], \"numpy\", numpy.__version__)'
	"
echo "$recipe" >"$tmp/.edge-actors-recipe"
rm -rf "$ROOT"
mv "$tmp" "$ROOT"
echo "$name: built $ROOT"
