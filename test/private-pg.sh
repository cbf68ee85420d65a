#!/usr/bin/env bash
# Make a private, relocatable copy of an installed PostgreSQL (binaries,
# share, server headers) under DIR and print its pg_config.  Several
# checkouts can then build, install and test side by side without
# overwriting each other's state_hub_events in the system's directories:
#
#   PG_CONFIG=$(bash test/private-pg.sh /tmp/mypg) make test
#
# PostgreSQL's binaries find their share and lib directories relative to
# themselves, so the copy works wherever it is.
set -euo pipefail
dir=${1:?usage: private-pg.sh DIR [PG_CONFIG]}
src_config=${2:-$(command -v /usr/lib/postgresql/15/bin/pg_config || command -v pg_config)}
bindir=$($src_config --bindir)
libroot=$(dirname "$bindir")                       # /usr/lib/postgresql/NN
share=$($src_config --sharedir)                    # /usr/share/postgresql/NN
inc=$(dirname "$($src_config --includedir-server)") # /usr/include/postgresql/NN
if [ ! -x "$dir$bindir/pg_config" ]; then
    for d in "$libroot" "$share" "$inc" "$($src_config --includedir)"; do
        mkdir -p "$dir$(dirname "$d")"
        cp -a "$d" "$dir$(dirname "$d")/"
    done
    chmod -R a+rX "$dir"
fi
echo "$dir$bindir/pg_config"
