#!/usr/bin/env bash
# bench/durable_commit_cpu.sh BLOCKS N ROUNDS [LIB.so ...]
#
# The committing side of durable mode in backend CPU time, robust to a
# noisy shared machine (TPS is not): one backend commits alternating blocks
# of N 1-row INSERTs into t_emit (emit() trigger, delivery = durable) and
# t_outbox (the hand-written outbox trigger, bench/setup.sql), BLOCKS of
# each, with the worker not publishing (nats_url empty, as bench/run.sh's
# *_paused variants); each block's CPU time is read from the backend's
# /proc/self/schedstat.  Prints us per commit for each, their ratio, and
# the worker's wake-ups and CPU time over the run.  Each LIB.so (an A/B:
# builds of state_hub_events.so) is installed in turn into $PG_CONFIG's
# pkglibdir, each round on fresh servers; without one, the installed build.
# As root (the servers run as postgres), with a private PostgreSQL
# (test/private-pg.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
B=$1; M=$2; ROUNDS=$3; shift 3
PG_CONFIG=${PG_CONFIG:?set PG_CONFIG to a private PostgreSQL}; export PG_CONFIG
LIB=$($PG_CONFIG --pkglibdir)
[ $# -gt 0 ] || set -- ""
. "$top/examples/servers.sh"
T="split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint"
for r in $(seq 1 $ROUNDS); do
  for so in "$@"; do
    [ -z "$so" ] || cp "$so" "$LIB/state_hub_events.so"
    servers_start "shared_preload_libraries = 'state_hub_events'
state_hub_events.database = 'bench'
state_hub_events.max_backlog_events = 0
autovacuum = off
state_hub_events.nats_url = ''"
    $PSQL -d postgres -c "CREATE DATABASE bench" >/dev/null
    $PSQL -d bench -f "$top/bench/setup.sql" -c "CREATE TABLE cpu_log (kind text, t0 bigint, t1 bigint)" >/dev/null
    { echo "SET synchronous_commit = off;"
      for i in $(seq 1 50); do echo "INSERT INTO t_emit (repo_id, slug, payload) VALUES ($i, 'w', 'x'); INSERT INTO t_outbox (repo_id, slug, payload) VALUES ($i, 'w', 'x');"; done
      for b in $(seq 1 $B); do
        for v in emit outbox; do
          echo "SELECT $T AS t0 \\gset"
          for i in $(seq 1 $M); do echo "INSERT INTO t_$v (repo_id, slug, payload) VALUES ($i, 'repo-$i', repeat('x', 100));"; done
          echo "SELECT $T AS t1 \\gset"
          echo "INSERT INTO cpu_log VALUES ('$v', :t0, :t1);"
        done
      done
    } > "$WORK/s.sql"; chown postgres: "$WORK/s.sql"
    for _ in $(seq 100); do wpid=$($PSQL -d bench -At -c "SELECT worker_pid FROM state_hub_events.worker_status()"); [ -n "$wpid" ] && break; sleep 0.1; done
    va=$(awk '/^voluntary_ctxt/{print $2}' /proc/$wpid/status); wa=$(cat /proc/$wpid/task/*/schedstat | awk '{s+=$1} END {print s}')
    $AS_USER env PGOPTIONS="-c state_hub_events.delivery=durable" psql -X -q -At -v ON_ERROR_STOP=1 -h $PGHOST -p $PGPORT -U postgres -d bench -f "$WORK/s.sql" >/dev/null
    vb=$(awk '/^voluntary_ctxt/{print $2}' /proc/$wpid/status); wb=$(cat /proc/$wpid/task/*/schedstat | awk '{s+=$1} END {print s}')
    echo "worker wake-ups $((vb - va)), worker cpu $(( (wb - wa) / 1000000 )) ms"
    $PSQL -d bench -At -F ' ' -c "SELECT '$r ${so:+$(basename $so)}', string_agg(kind || ' ' || round(s / 1000.0 / n, 1), ' ' ORDER BY kind DESC) || ' ratio ' || round(max(s) FILTER (WHERE kind='outbox')::numeric / max(s) FILTER (WHERE kind='emit'), 3) FROM (SELECT kind, sum(t1 - t0) s, count(*) * $M n FROM cpu_log GROUP BY kind) x"
    servers_stop
  done
done
