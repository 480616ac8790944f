#!/usr/bin/env bash
# Build (once) an emulated Debian root for `make test-arm`: build_root.sh aarch64|armv7|armv6
# Cached in $ARM_CACHE/<name>; rebuilt only when what goes in changes. Needs root,
# debootstrap, qemu-user-static, dpkg-deb, and the Debian mirror and PyPI.
#
# `debootstrap --foreign` downloads the packages; the second stage is done on the
# host, not under qemu: every .deb is unpacked natively (the emulated
# `debootstrap --second-stage` reruns dpkg and perl per package and took over 40
# minutes on a shared 2-core VM). Maintainer scripts are skipped, which is enough
# to run Python; the few files they would make (passwd, group) are copied in.
# Wheels are installed by the host's pip for the root's platform (`--platform`,
# `--target`) and everything is byte-compiled natively (CPython 3.11 bytecode is
# the same on every architecture).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
name=$1
root_params "$name"
for tool in debootstrap "$QEMU-static" dpkg-deb; do
	command -v "$tool" >/dev/null || {
		echo "$tool missing: apt-get install -y qemu-user-static debootstrap binfmt-support" >&2
		exit 1
	}
done

base=python3,python3-venv
case "$name" in
aarch64)
	pkgs=$base
	plat=aarch64
	;;
# PyPI has no armv7l wheels for numpy, psutil or PyYAML (and piwheels is not
# always reachable): a board would build them from source or take Debian's.
armv7 | armv6)
	pkgs=$base,python3-numpy,python3-psutil,python3-yaml
	plat=armv7l
	;;
esac
pip_deps="pytest>=7.4 pytest-timeout>=2.2 hypothesis>=6.90 boto3>=1.28"
case "$name" in
aarch64) pip_deps="$pip_deps numpy>=1.24 psutil>=5.9 PyYAML>=6.0 orjson>=3.9" ;;
# orjson's armv7l wheel is hard-float ARMv7 code: not for the armel (ARMv6) root.
armv7) pip_deps="$pip_deps orjson>=3.9" ;;
esac
# Rebuilt only when what goes in changes (bump v2 to force a rebuild).
recipe="v2 $SUITE $DEB_ARCH $pkgs $pip_deps"
if [ "$(cat "$ROOT/.edge-actors-recipe" 2>/dev/null)" = "$recipe" ]; then
	echo "$name: cached root $ROOT"
	exit 0
fi
tmp=$ROOT.tmp
rm -rf "$tmp"
mkdir -p "$ARM_CACHE"
echo "$name: debootstrap --foreign $SUITE/$DEB_ARCH into $tmp"
debootstrap --foreign --arch="$DEB_ARCH" --variant=minbase --include="$pkgs" "$SUITE" "$tmp" "$ARM_MIRROR"

echo "$name: unpacking $(ls "$tmp"/var/cache/apt/archives/*.deb | wc -l) packages natively"
for deb in "$tmp"/var/cache/apt/archives/*.deb; do
	# Keep merged-/usr symlinks (/bin -> usr/bin) that the first stage made.
	dpkg-deb --fsys-tarfile "$deb" | tar -C "$tmp" --keep-directory-symlink -xf -
done
# The links update-alternatives would make (numpy needs libblas.so.3, liblapack.so.3).
for lib in "$tmp"/usr/lib/*/blas/*.so.3 "$tmp"/usr/lib/*/lapack/*.so.3; do
	[ -e "$lib" ] && ln -sfn "$(basename "$(dirname "$lib")")/$(basename "$lib")" \
		"$(dirname "$(dirname "$lib")")/$(basename "$lib")"
done
for f in passwd group; do
	[ -s "$tmp/etc/$f" ] || cp "$tmp/usr/share/base-passwd/$f.master" "$tmp/etc/$f"
done
cp /etc/resolv.conf "$tmp/etc/resolv.conf"
# pip inside the root must trust whatever CA the host trusts (proxies, mirrors).
mkdir -p "$tmp/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$tmp/etc/ssl/certs/host-ca.crt"

# A venv is a pyvenv.cfg and a python symlink; made here, not by the emulated python.
pyver=$(basename "$(readlink -f "$tmp/usr/bin/python3")")
pyver=${pyver#python}
venv=$tmp/opt/venv
site=$venv/lib/python$pyver/site-packages
mkdir -p "$venv/bin" "$site"
ln -sfn lib "$venv/lib64"
ln -sfn "/usr/bin/python$pyver" "$venv/bin/python"
ln -sfn python "$venv/bin/python3"
printf 'home = /usr/bin\ninclude-system-site-packages = true\nversion = %s\n' "$pyver" \
	>"$venv/pyvenv.cfg"
# The project itself: an editable install is a path entry; /src is refreshed per run.
echo /src >"$site/edge-actors-src.pth"

if [ -n "$pip_deps" ]; then
	tags=()
	for t in manylinux_2_36 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
		manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014; do
		tags+=(--platform "${t}_$plat")
	done
	# armel: pure-Python wheels only (an armv7l wheel is hard-float ARMv7 code).
	[ "$name" = armv6 ] && tags=(--platform any)
	cpv=cp${pyver/./}
	python3 -m pip install -q --disable-pip-version-check --no-compile --only-binary=:all: \
		--target "$site" --python-version "$pyver" --implementation cp \
		--abi "$cpv" --abi abi3 --abi none "${tags[@]}" $pip_deps
fi
python3 -m compileall -q -j 0 "$site" "$tmp/usr/lib/python$pyver" "$tmp/usr/lib/python3/dist-packages" \
	>/dev/null || true

ensure_binfmt
unshare --mount --propagation private chroot "$tmp" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin \
	HOME=/root LANG=C.UTF-8 /opt/venv/bin/python -c '
import sys, numpy, psutil, yaml, pytest, hypothesis, pytest_timeout
print(sys.version.split()[0], "numpy", numpy.__version__, "on", sys.implementation.name)
'
echo "$recipe" >"$tmp/.edge-actors-recipe"
rm -rf "$ROOT"
mv "$tmp" "$ROOT"
echo "$name: built $ROOT"
