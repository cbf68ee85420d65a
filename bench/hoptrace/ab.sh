#!/usr/bin/env bash
# bench/hoptrace/ab.sh ROUNDS XACTS VARIANT...
#
# Scratch A/B of the 1-event COMMIT publish time (one client, wait_for_ack
# on): each round installs $HOPDIR/VARIANT.so in turn into one private
# PostgreSQL (PG_CONFIG), restarts it (same nats-server), warms up, runs
# XACTS single-row commits, and prints stats()' p50/p99, pgbench's median
# transaction time, and the raw nats.c round trip back to back and spaced
# GAP_US apart (600 by default, about the pause between one client's
# publishes).  A variant named trace* runs with shim.so preloaded and
# leaves its per-commit hops in $HOPDIR/hops.VARIANT.ROUND.txt (hops.py).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
HOPDIR=${HOPDIR:-/tmp/hoptrace}
R=$1; T=$2; shift 2
LIB=$("$PG_CONFIG" --pkglibdir)
PGBENCH=$("$PG_CONFIG" --bindir)/pgbench
. "$top/examples/servers.sh"
servers_start "shared_preload_libraries = 'state_hub_events'
state_hub_events.database = 'bench'
max_connections = 50
fsync = on
synchronous_commit = on"
$PSQL -d postgres -c "CREATE DATABASE bench" >/dev/null
$PSQL -d bench -f "$top/bench/setup.sql" >/dev/null
cat >"$WORK/ins1.sql" <<SQL
\set r random(1, 1000000)
INSERT INTO t_emit (repo_id, slug, payload) VALUES (:r, 'repo-' || :r, repeat('x', 100));
SQL
[ -z "$AS_USER" ] || chown postgres: "$WORK/ins1.sql"
bench() {
    (cd "$WORK" && $AS_USER env PGOPTIONS="-c state_hub_events.wait_for_ack=on" PGHOST=$PGHOST \
        PGPORT=$PGPORT PGUSER=postgres $PGBENCH -n -c 1 -t "$1" "${@:2}" -f "$WORK/ins1.sql" bench 2>&1)
}
for run in $(seq 1 "$R"); do
    for v in "$@"; do
        # a new file, never one the running server has mapped
        cp "$HOPDIR/$v.so" "$LIB/she.tmp.so" && mv "$LIB/she.tmp.so" "$LIB/state_hub_events.so"
        pre=; [[ $v == trace* ]] && pre=$HOPDIR/shim.so
        $AS_USER env LD_PRELOAD=$pre "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -m fast restart >/dev/null
        for _ in $(seq 1 100); do
            [ "$($PSQL -d bench -At -c 'SELECT connected FROM state_hub_events.ping()' 2>/dev/null || true)" = t ] && break
            sleep 0.1
        done
        bench 200 >/dev/null
        rm -f /tmp/she_hops.txt
        $PSQL -d bench -c "SELECT state_hub_events.stats_reset()" >/dev/null
        out=$(bench "$T" -l --log-prefix="$WORK/pgl")
        med=$(cat "$WORK"/pgl* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int(NR/2)]}')
        rm -f "$WORK"/pgl*
        st=$($PSQL -d bench -At -F ' ' -c "SELECT round(commit_publish_p50_ms::numeric * 1000), round(commit_publish_p99_ms::numeric * 1000) FROM state_hub_events.stats()")
        hot=$("$top/bench/natspub" "$NATS_URL" rtt 2000)
        spaced=$("$top/bench/natspub" "$NATS_URL" rtt 1000 "${GAP_US:-600}")
        echo "round $run $v: COMMIT publish p50/p99 us $st; txn median $med us | raw $hot | raw spaced $spaced"
        [ ! -f /tmp/she_hops.txt ] || mv /tmp/she_hops.txt "$HOPDIR/hops.$v.$run.txt"
    done
done
