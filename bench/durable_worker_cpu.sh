#!/usr/bin/env bash
# bench/durable_worker_cpu.sh CLIENTS XACTS ROUNDS [LIB.so ...]
#
# The durable worker's CPU per event while it drains the outbox behind
# CLIENTS pgbench clients (each XACTS 1-row INSERTs into t_emit with
# delivery = durable, as bench/run.sh's c32 emit_durable), robust to a
# noisy shared machine: the worker's CPU time summed over its threads
# (/proc/PID/task/*/schedstat) from before the run to the outbox being
# empty, per event; also its main thread's share, its voluntary wake-ups
# per event, the backends' CPU per commit (the postmaster's reaped
# children) and pgbench's TPS.  LIB.so arguments as in
# bench/durable_commit_cpu.sh.  PERF=1 records the worker with perf.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
C=$1; T=$2; ROUNDS=$3; shift 3
PG_CONFIG=${PG_CONFIG:?set PG_CONFIG to a private PostgreSQL}; export PG_CONFIG
LIB=$($PG_CONFIG --pkglibdir); PGBENCH=$($PG_CONFIG --bindir)/pgbench
[ $# -gt 0 ] || set -- ""
. "$top/examples/servers.sh"
for r in $(seq 1 $ROUNDS); do
  for so in "$@"; do
    [ -z "$so" ] || cp "$so" "$LIB/state_hub_events.so"
    servers_start "shared_preload_libraries = 'state_hub_events'
state_hub_events.database = 'bench'
state_hub_events.max_backlog_events = 0
max_connections = 50
fsync = on
synchronous_commit = on"
    $PSQL -d postgres -c "CREATE DATABASE bench" >/dev/null
    $PSQL -d bench -f "$top/bench/setup.sql" >/dev/null
    printf '%s\n' '\set r random(1, 1000000)' "INSERT INTO t_emit (repo_id, slug, payload) VALUES (:r, 'repo-' || :r, repeat('x', 100));" > "$WORK/ins.sql"
    chown postgres: "$WORK/ins.sql"
    # warm up: the worker connects and publishes once
    $PSQL -d bench -c "SET state_hub_events.delivery = durable" -c "INSERT INTO t_emit (repo_id, slug, payload) VALUES (0, 'w', 'x')"
    for _ in $(seq 300); do [ "$($PSQL -d bench -At -c 'SELECT count(*) FROM state_hub_events.outbox')" = 0 ] && break; sleep 0.1; done
    wpid=$($PSQL -d bench -At -c "SELECT worker_pid FROM state_hub_events.worker_status()")
    a=$(cat /proc/$wpid/task/*/schedstat | awk '{s+=$1} END {print s}'); am=$(cut -d' ' -f1 /proc/$wpid/schedstat)
    [ -z "${PERF:-}" ] || { mkdir -p "$top/bench/results"; perf record -F 2000 -g -o $top/bench/results/worker.perf.data -p $wpid 2>/dev/null & pp=$!; }
    va=$(awk '/^voluntary_ctxt/{print $2}' /proc/$wpid/status)
    pm=$(head -1 $WORK/pg/postmaster.pid); ca=$(awk '{print $16+$17}' /proc/$pm/stat)
    out=$($AS_USER env PGOPTIONS="-c state_hub_events.delivery=durable" PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=postgres $PGBENCH -n -c $C -j 2 -t $T -f "$WORK/ins.sql" bench 2>&1)
    for _ in $(seq 600); do [ "$($PSQL -d bench -At -c 'SELECT count(*) FROM state_hub_events.outbox')" = 0 ] && break; sleep 0.1; done
    b=$(cat /proc/$wpid/task/*/schedstat | awk '{s+=$1} END {print s}'); bm=$(cut -d' ' -f1 /proc/$wpid/schedstat)
    [ -z "${PERF:-}" ] || { kill -INT $pp; wait $pp || true; }
    vb=$(awk '/^voluntary_ctxt/{print $2}' /proc/$wpid/status)
    n=$(( C * T )); cb=$(awk '{print $16+$17}' /proc/$pm/stat)
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
    echo "round $r ${so:+$(basename $so)} worker $(awk -v a=$a -v b=$b -v n=$n 'BEGIN{printf "%.1f", (b-a)/n/1000}') us/event (main thread $(awk -v a=$am -v b=$bm -v n=$n 'BEGIN{printf "%.1f", (b-a)/n/1000}')), tps $tps, backends $(awk -v a=$ca -v b=$cb -v n=$n 'BEGIN{printf "%.1f", (b-a)*10000/n}') us/commit, worker wake-ups/event $(awk -v a=$va -v b=$vb -v n=$n 'BEGIN{printf "%.2f", (b-a)/n}')"
    servers_stop
  done
done
