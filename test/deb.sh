#!/usr/bin/env bash
#
# deb.sh [OUTDIR]
#    Build the Debian packages of state_hub_events (make deb) the way Debian
#    builds PostgreSQL extensions: dpkg-buildpackage on debian/, pg_buildext
#    building one postgresql-NN-state-hub-events per PostgreSQL version that
#    debian/pgversions allows and this machine has (pg_regress against each
#    runs in the build; DEB_BUILD_OPTIONS=nocheck skips it).  Works on a copy
#    of the tree; the .deb files land in OUTDIR (default build/deb).
#
#    Needs debhelper, dpkg-dev, postgresql-server-dev-all, libnats-dev and
#    uuid-dev (dpkg-checkbuilddeps names what is missing).
#
# IDENTIFICATION
#    test/deb.sh
#
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$top/build/deb}" && cd "${1:-$top/build/deb}" && pwd)
tmp=$(mktemp -d /tmp/state_hub_events_deb.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# as root, the build's test cluster runs as postgres and reads the package
# tree from here
chmod 755 "$tmp"

src=$tmp/state-hub-events
mkdir -p "$src"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$top" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) |
        tar -C "$src" -xf -
else
    (cd "$top" && tar --exclude=.git --exclude=./build -cf - .) | tar -C "$src" -xf -
fi
cd "$src"
# debian/control lists the packages of the versions this machine builds
pg_buildext updatecontrol
dpkg-checkbuilddeps
dpkg-buildpackage -us -uc -b
cp "$tmp"/*.deb "$out"/
ls -l "$out"/*.deb
