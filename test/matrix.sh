#!/usr/bin/env bash
#
# matrix.sh
#    Build and test state_hub_events on the PostgreSQL, nats.c and
#    nats-server versions users run (make test-matrix), and print one
#    summary line per combination.
#
#    native     PostgreSQL 15, nats.c 3.4, nats-server 2.9: this machine
#               (Debian bookworm), test/run-tests.sh as `make test` runs it
#    native-new the same against the newest nats-server: the binary of the
#               sid root, copied out (NATS_SERVER=path)
#    trixie     PostgreSQL 17, nats.c 3.10, nats-server 2.10, in a root
#    sid        PostgreSQL 18, nats.c 3.14, nats-server 2.15, in a root
#
#    The roots are made with `debootstrap --variant=minbase` and Debian's
#    packages only, and cached under MATRIX_CACHE, keyed by suite and
#    package list.  Each run works on an overlay of the cached root, so the
#    root stays clean; /proc, /dev and /dev/shm are mounted inside and
#    unmounted by the exit trap.  The fuzz pass of the plain C parsers
#    (which do not depend on PostgreSQL or nats.c) is left to make test.
#    In a root the extension is built (a
#    compiler warning counts as a failure), pg_regress and the TAP tests run
#    as the postgres user (test/run-tests.sh), and then the Debian package is
#    built with dpkg-buildpackage, installed, and smoke-tested.
#
#    Run as root.  Settings (environment or make variables):
#      MATRIX          combinations to run (default: all four, in the
#                      order native trixie sid native-new)
#      MATRIX_CACHE    where the roots live (/var/cache/state-hub-events-matrix)
#      MATRIX_MIRROR   Debian mirror (http://deb.debian.org/debian)
#      MATRIX_TAP      TAP files run in the roots (default: all of test/t);
#                      native combinations honour PROVE_TESTS as make test does
#      MATRIX_REFRESH  1: make the roots again even when cached
#      MATRIX_NO_DEB   1: skip the Debian package step
#
# IDENTIFICATION
#    test/matrix.sh
#
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cache=${MATRIX_CACHE:-/var/cache/state-hub-events-matrix}
mirror=${MATRIX_MIRROR:-http://deb.debian.org/debian}
combos=${MATRIX:-native trixie sid native-new}

if [ "$(id -u)" -ne 0 ]; then
    echo "matrix.sh: run as root (debootstrap, chroot and mounts need it)" >&2
    exit 2
fi

# The PostgreSQL major version of a Debian suite.
suite_pg() {
    case $1 in
        bookworm) echo 15 ;;
        trixie) echo 17 ;;
        sid) echo 18 ;;
        *) echo "matrix.sh: no PostgreSQL known for suite $1" >&2; return 1 ;;
    esac
}

# Packages a suite's root gets: the server and its headers, nats.c, the
# nats-server, what the tests need, and the Debian package's build
# dependencies (postgresql-all, build-essential, debhelper).
root_packages() {
    local v
    v=$(suite_pg "$1") || return 1
    echo "postgresql-$v postgresql-server-dev-$v postgresql-server-dev-all postgresql-all" \
         "libnats-dev nats-server uuid-dev libipc-run-perl build-essential" \
         "openssl python3 python3-pydantic debhelper"
}

# The nats-server binary of a root (Debian installs it in /usr/sbin).
root_nats_server() {
    local f
    for f in "$1/usr/sbin/nats-server" "$1/usr/bin/nats-server"; do
        [ -x "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

# Set ROOT to the cached root of a suite, made when missing, and
# ROOT_SECONDS to how long making it took (0: cached).
root_dir() {
    local suite=$1 pkgs key dir t0 d
    pkgs=$(root_packages "$suite") || return 1
    # the key changes with the package list and with how roots are made
    key=$(printf '%s\n%s\n' "$pkgs" "$(sed -n '/^make_root()/,/^}/p' "$0")" |
          sha256sum | cut -c1-12)
    dir=$cache/roots/$suite-$key
    ROOT=$dir
    ROOT_SECONDS=0
    if [ -x "$dir/usr/lib/postgresql/$(suite_pg "$suite")/bin/pg_config" ] &&
        [ -z "${MATRIX_REFRESH:-}" ]; then
        return 0
    fi
    mkdir -p "$cache/roots"
    # older roots of this suite are of no more use
    for d in "$cache/roots/$suite-"*; do
        [ -d "$d" ] && rm -rf "$d"
    done
    t0=$SECONDS
    echo "== root $suite: debootstrap, then $pkgs"
    if ! make_root "$suite" "$dir.partial" "$pkgs" >"$cache/roots/$suite.log" 2>&1; then
        umount_root "$dir.partial"
        echo "matrix.sh: making the $suite root failed; the end of $cache/roots/$suite.log:"
        tail -n 30 "$cache/roots/$suite.log"
        rm -rf "$dir.partial"
        return 1
    fi
    mv "$dir.partial" "$dir"
    ROOT_SECONDS=$((SECONDS - t0))
    echo "== root $suite made in $ROOT_SECONDS s ($(sed -nE 's/^matrix: (.*) took (.*)$/\1 \2/p' \
        "$cache/roots/$suite.log" | paste -sd, | sed 's/,/, /g'))"
}

# debootstrap a minimal root and install the packages with apt inside it
# (apt, unlike debootstrap's --include, resolves every dependency).
make_root() {
    local suite=$1 dir=$2 pkgs=$3
    local in=(chroot "$dir" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin
              DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8)
    local t0=$SECONDS
    debootstrap --variant=minbase "$suite" "$dir" "$mirror" || return 1
    echo "matrix: debootstrap took $((SECONDS - t0)) s"
    t0=$SECONDS
    # no services start inside the root, and no cluster is made
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d" || return 1
    chmod 755 "$dir/usr/sbin/policy-rc.d"
    mkdir -p "$dir/etc/postgresql-common"
    echo "create_main_cluster = false" >"$dir/etc/postgresql-common/createcluster.conf"
    # a throwaway root needs no fsync per unpacked file (minutes on a busy
    # disk with clang and LLVM, which the server headers depend on)
    echo force-unsafe-io >"$dir/etc/dpkg/dpkg.cfg.d/unsafe-io"
    # a mirror that is a dated snapshot serves Release files past their
    # Valid-Until
    echo 'Acquire::Check-Valid-Until "false";' >"$dir/etc/apt/apt.conf.d/99matrix"
    mount_root "$dir" || return 1
    "${in[@]}" apt-get update -q || return 1
    # shellcheck disable=SC2086
    "${in[@]}" apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confold $pkgs || return 1
    "${in[@]}" apt-get clean
    umount_root "$dir"
    echo "matrix: packages took $((SECONDS - t0)) s"
}

mounted=()
# Mount /proc, /dev and /dev/shm inside a root (remembered for the trap).
mount_root() {
    local dir=$1
    mount -t proc proc "$dir/proc" && mounted+=("$dir/proc")
    # private, so that the tmpfs below never shows up in the host's /dev
    mount --bind /dev "$dir/dev" && mounted+=("$dir/dev") &&
        mount --make-private "$dir/dev"
    mount -t tmpfs -o mode=1777 shm "$dir/dev/shm" && mounted+=("$dir/dev/shm")
}

# Unmount what mount_root mounted under a root (or everything: no argument),
# innermost first.
umount_root() {
    local i keep=()
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        if [ -z "${1:-}" ] || [[ ${mounted[i]} == "$1"/* ]]; then
            umount "${mounted[i]}" || umount -l "${mounted[i]}"
        else
            keep=("${mounted[i]}" "${keep[@]}")
        fi
    done
    mounted=("${keep[@]}")
}

work=$(mktemp -d /tmp/state_hub_events_matrix.XXXXXX)
cleanup() {
    umount_root
    [ -n "${KEEP_TEST_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Copy the source tree (what git tracks plus new files it does not ignore;
# everything but .git outside a checkout) to a directory.
copy_tree() {
    local dest=$1
    mkdir -p "$dest"
    if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$top" && git ls-files -z -co --exclude-standard |
            tar --null -T - -cf -) | tar -C "$dest" -xf -
    else
        (cd "$top" && tar --exclude=.git -cf - .) | tar -C "$dest" -xf -
    fi
}

# Print "N M" from run-tests.sh's "summary: N passed, M failed" in a file
# (0 1 when there is none: the run broke before its summary).
summary_of() {
    sed -nE 's/^summary: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$1" | tail -n 1 |
        grep . || echo "0 1"
}

lines=()
total_failed=0
# Record a combination's result line.
result() {
    local label=$1 passed=$2 failed=$3 detail=$4
    lines+=("$label: $passed passed, $failed failed ($detail)")
    total_failed=$((total_failed + failed))
    echo "== $label: $passed passed, $failed failed ($detail)"
}

# Build in a copy of the tree with PG_CONFIG and print the number of
# compiler warnings (the log goes to $2).
count_warnings() {
    local pgc=$1 log=$2 dir=$work/warnings-build
    rm -rf "$dir"
    copy_tree "$dir"
    make -C "$dir" -s PG_CONFIG="$pgc" with_llvm=no all test/natsdump >"$log" 2>&1 ||
        echo "build failed" >>"$log"
    cat "$log" >&2
    grep -cE 'warning:|error:|build failed' "$log"
}

# "pgNN/nats-X.Y" from a pg_config and a nats-server binary.
label_of() {
    echo "pg$("$@" --version 2>/dev/null | head -n 1 | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
}
nats_label_of() {
    echo "nats-$("$@" --version | sed -E 's/.*v([0-9]+\.[0-9]+).*/\1/')"
}

# pg_regress, then the TAP files, with test/run-tests.sh on this machine
# against the nats-server binary $1 (exported as NATS_SERVER).  Sets the
# result line.
combo_native() {
    local server=$1 label log t0 tb tr tt w pgc passed failed p2 f2
    pgc=${PG_CONFIG:-$(command -v /usr/lib/postgresql/15/bin/pg_config || command -v pg_config)}
    label="$(label_of "$pgc")/$(nats_label_of "$server")"
    log=$work/${label//\//_}
    echo "== $label: on this machine, $server"
    t0=$SECONDS
    w=$(count_warnings "$pgc" "$log.build.log")
    tb=$((SECONDS - t0)); t0=$SECONDS
    NATS_SERVER=$server PG_CONFIG=$pgc SKIP_FUZZ=1 SKIP_TAP=1 bash "$top/test/run-tests.sh" 2>&1 |
        tee "$log.regress.log"
    tr=$((SECONDS - t0)); t0=$SECONDS
    NATS_SERVER=$server PG_CONFIG=$pgc SKIP_FUZZ=1 SKIP_REGRESS=1 bash "$top/test/run-tests.sh" 2>&1 |
        tee "$log.tap.log"
    tt=$((SECONDS - t0))
    read -r passed failed < <(summary_of "$log.regress.log")
    read -r p2 f2 < <(summary_of "$log.tap.log")
    passed=$((passed + p2)); failed=$((failed + f2))
    [ "$w" -eq 0 ] || failed=$((failed + 1))
    result "$label" "$passed" "$failed" \
        "$w build warnings; build ${tb} s, pg_regress ${tr} s, TAP ${tt} s"
}

# The suites inside a suite's root, on an overlay of the cached root.
combo_root() {
    local suite=$1 v run r t0 tb tr tt td w label log passed failed p2 f2 deb
    t0=$SECONDS
    if ! root_dir "$suite"; then
        result "$suite" 0 1 "cannot make the root"
        return
    fi
    local troot=$((SECONDS - t0))
    v=$(suite_pg "$suite")
    run=$work/$suite
    r=$run/root
    mkdir -p "$run/upper" "$run/work" "$r"
    mount -t overlay overlay -o "lowerdir=$ROOT,upperdir=$run/upper,workdir=$run/work" "$r" &&
        mounted+=("$r") && mount_root "$r" || {
        result "$suite" 0 1 "cannot mount the root"
        return
    }
    local in=(chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
              DEBIAN_FRONTEND=noninteractive PG_CONFIG=/usr/lib/postgresql/$v/bin/pg_config)
    copy_tree "$r/build/state_hub_events"
    label="$(label_of "${in[@]}" pg_config)/$(nats_label_of "${in[@]}" nats-server)"
    log=$work/${label//\//_}
    echo "== $label: in the $suite root"

    t0=$SECONDS
    "${in[@]}" make -C /build/state_hub_events -s with_llvm=no all test/natsdump \
        >"$log.build.log" 2>&1 || echo "build failed" >>"$log.build.log"
    cat "$log.build.log"
    w=$(grep -cE 'warning:|error:|build failed' "$log.build.log")
    tb=$((SECONDS - t0)); t0=$SECONDS
    "${in[@]}" SKIP_FUZZ=1 SKIP_TAP=1 bash /build/state_hub_events/test/run-tests.sh 2>&1 |
        tee "$log.regress.log"
    tr=$((SECONDS - t0)); t0=$SECONDS
    "${in[@]}" SKIP_FUZZ=1 SKIP_REGRESS=1 PROVE_TESTS="${MATRIX_TAP:-test/t/*.pl}" \
        bash /build/state_hub_events/test/run-tests.sh 2>&1 | tee "$log.tap.log"
    tt=$((SECONDS - t0)); t0=$SECONDS
    read -r passed failed < <(summary_of "$log.regress.log")
    read -r p2 f2 < <(summary_of "$log.tap.log")
    passed=$((passed + p2)); failed=$((failed + f2))
    [ "$w" -eq 0 ] || failed=$((failed + 1))

    deb="deb skipped"
    if [ -z "${MATRIX_NO_DEB:-}" ]; then
        # the package, built as Debian builds it (pg_regress runs in the
        # build), installed over what make install put there, smoke-tested
        if "${in[@]}" bash -c "bash /build/state_hub_events/test/deb.sh /build/deb &&
                apt-get install -y -q --no-install-recommends /build/deb/postgresql-$v-state-hub-events_*.deb &&
                bash /build/state_hub_events/test/deb-smoke.sh" >"$log.deb.log" 2>&1; then
            deb="postgresql-$v-state-hub-events built, installed, smoke ok"
            passed=$((passed + 1))
        else
            tail -n 40 "$log.deb.log"
            deb="Debian package FAILED"
            failed=$((failed + 1))
        fi
    fi
    td=$((SECONDS - t0))
    umount_root "$run"
    result "$label" "$passed" "$failed" \
        "$w build warnings; $deb; root ${troot} s$([ "$ROOT_SECONDS" -gt 0 ] || echo ' (cached)'), build ${tb} s, pg_regress ${tr} s, TAP ${tt} s, deb ${td} s"
}

if [ "${1:-}" = "--roots" ]; then
    for suite in trixie sid; do
        root_dir "$suite" || exit 1
        echo "$suite: $ROOT"
    done
    exit 0
fi

t_all=$SECONDS
for c in $combos; do
    case $c in
        native)
            combo_native "$(command -v nats-server)" ;;
        native-new)
            # the newest nats-server is the sid root's (a Go program that
            # needs only the C library); the test user must be able to run it
            if ! root_dir sid; then
                result "pg15/nats-sid" 0 1 "cannot make the sid root"
                continue
            fi
            mkdir -p "$cache/bin"
            cp "$(root_nats_server "$ROOT")" "$cache/bin/nats-server-sid"
            chmod 755 "$cache" "$cache/bin" "$cache/bin/nats-server-sid"
            combo_native "$cache/bin/nats-server-sid" ;;
        trixie | sid)
            combo_root "$c" ;;
        *)
            result "$c" 0 1 "unknown combination (native, native-new, trixie, sid)" ;;
    esac
done

echo
echo "== state_hub_events test matrix ($(( (SECONDS - t_all) / 60 )) min)"
for l in "${lines[@]}"; do
    echo "$l"
done
[ "$total_failed" -eq 0 ]
