#!/usr/bin/env bash
# Run pg_regress and the TAP tests with state_hub_events built with
# AddressSanitizer (gcc -fsanitize=address), and fail on any report.
#
# Debian's PostgreSQL is not instrumented, so the servers run with gcc's
# ASan runtime preloaded: a private copy of PostgreSQL (test/private-pg.sh)
# whose bin/postgres is a small wrapper that sets LD_PRELOAD and
# ASAN_OPTIONS (leak detection off: PostgreSQL frees by memory context, not
# by free(); reports written to a log directory) and then runs the real
# binary under its usual name, so pg_ctl restart finds the wrapper again.
# The extension, and the memory it and nats.c take with malloc, are
# checked; palloc'd chunks inside PostgreSQL's memory contexts are not
# (the server itself is not instrumented).
#
#   bash test/run-asan.sh              everything (~15 min)
#   PROVE_TESTS="test/t/001_publish.pl" SKIP_REGRESS=1 bash test/run-asan.sh
#
# ASAN_PG names the private copy (default /tmp/state_hub_events_asan_pg),
# PG_CONFIG the PostgreSQL it copies (default: as test/run-tests.sh).
# Ends with "asan: N reports" and fails unless N is 0 and the tests pass.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
src_config=${PG_CONFIG:-}
if [ -z "$src_config" ]; then
    if [ -x /usr/lib/postgresql/15/bin/pg_config ]; then
        src_config=/usr/lib/postgresql/15/bin/pg_config
    else
        src_config=$(command -v pg_config)
    fi
fi
asan_pg=${ASAN_PG:-/tmp/state_hub_events_asan_pg}
libasan=$(gcc -print-file-name=libasan.so)
libasan=$(readlink -f "$libasan")
if [ ! -f "$libasan" ]; then
    echo "asan: gcc's libasan is missing (libasan8 comes with gcc)" >&2
    exit 2
fi

# The private copy (the source copy's pg_config may itself be a private one:
# copy from the system's PostgreSQL the same way).
pg_config=$(bash "$top/test/private-pg.sh" "$asan_pg" "$src_config") || exit 2
bindir=$("$pg_config" --bindir)

logdir=$(mktemp -d /tmp/state_hub_events_asan_logs.XXXXXX)
chmod 1777 "$logdir"
asan_options="detect_leaks=0:log_path=$logdir/asan:abort_on_error=0:halt_on_error=1"
asan_options="$asan_options:quarantine_size_mb=32:malloc_context_size=20:print_suppressions=0"

# A preloaded runtime initialises at the first malloc, and in postgres that
# is inside libgpg-error's constructor, under glibc's gettext lock; the
# initialisation looks up swift_demangle, fails, and its dlerror() takes the
# same lock: postgres hangs before main (llvm-project issue 49223 is this
# class of hang).  A stub swift_demangle (answering "not a Swift name")
# makes that lookup succeed.
stub="$(dirname "$bindir")/lib/she_asan_swift_stub.so"
printf '%s\n' '#include <stddef.h>' \
    'char *swift_demangle(const char *m, size_t l, char *o, size_t *ol, unsigned f);' \
    'char *swift_demangle(const char *m, size_t l, char *o, size_t *ol, unsigned f) { return NULL; }' \
    | gcc -shared -fPIC -x c -o "$stub" - || exit 2
chmod 755 "$stub"

# The wrapper: the real binary keeps running as "postgres" (exec -a), so
# postmaster.opts records the wrapper and restarts go through it too.
[ -f "$bindir/postgres.bin" ] || mv "$bindir/postgres" "$bindir/postgres.bin"
cat >"$bindir/postgres" <<EOF
#!/bin/bash
# Written by test/run-asan.sh: PostgreSQL with gcc's ASan runtime preloaded.
export ASAN_OPTIONS='$asan_options'
export LD_PRELOAD='$libasan:$stub'
exec -a "\$0" "\$(dirname "\$0")/postgres.bin" "\$@"
EOF
chmod 755 "$bindir/postgres"
if ! timeout 60 "$bindir/postgres" -V >/dev/null; then
    echo "asan: postgres does not start with the ASan runtime preloaded" >&2
    exit 2
fi

# The checker checks: an instrumented program's report lands in the log
# directory.
canary_dir=$(mktemp -d /tmp/state_hub_events_asan_canary.XXXXXX)
cat >"$canary_dir/canary.c" <<'EOF'
#include <stdlib.h>
int main(void) { volatile char *p = malloc(4); p[4] = 1; return 0; }
EOF
gcc -fsanitize=address -o "$canary_dir/canary" "$canary_dir/canary.c"
ASAN_OPTIONS="detect_leaks=0:log_path=$canary_dir/asan" "$canary_dir/canary" 2>/dev/null
if ! grep -qs 'heap-buffer-overflow' "$canary_dir"/asan.*; then
    echo "asan: the canary's report did not reach its log directory; cannot trust an empty one" >&2
    rm -rf "$canary_dir"
    exit 2
fi
rm -rf "$canary_dir"

# Build from a copy, so no instrumented object is left in the tree.
tree=$(mktemp -d /tmp/state_hub_events_asan_tree.XXXXXX)
cleanup() { rm -rf "$tree"; }
trap cleanup EXIT
cp -a "$top/." "$tree/"
make -C "$tree" -s PG_CONFIG="$pg_config" clean >/dev/null 2>&1
rm -f "$tree"/test/natsdump

echo "== AddressSanitizer run: extension built with -fsanitize=address, servers preload $libasan"
echo "== reports go to $logdir"
COPT="-fsanitize=address -fno-omit-frame-pointer -g" PG_CONFIG="$pg_config" SKIP_FUZZ=1 \
    bash "$tree/test/run-tests.sh"
tests_rc=$?

# The extension really was instrumented.  It also really ran under ASan:
# an instrumented library loaded into a process without the runtime first
# in line refuses to load, and every test would have failed.
so="$("$pg_config" --pkglibdir)/state_hub_events.so"
if ! readelf -d "$so" | grep -q 'libasan'; then
    echo "asan: $so is not instrumented" >&2
    tests_rc=1
fi

reports=$(ls "$logdir" | wc -l)
for f in "$logdir"/*; do
    [ -f "$f" ] || continue
    echo "--- $f"; head -n 60 "$f"
done
echo "asan: $reports reports"
[ "$reports" -eq 0 ] && rmdir "$logdir"
[ "$reports" -eq 0 ] && [ "$tests_rc" -eq 0 ]
