#!/usr/bin/env bash
# bench/run.sh — make bench [QUICK=1]
#
# Measures the commit path of state_hub_events against what users already
# know, side by side in one run on this machine: no trigger, a NOTIFY
# trigger, a hand-written outbox trigger, emit() in immediate mode (acks
# waited for, and not), and raw nats.c.  Starts its own nats-server and
# PostgreSQL on loopback, stops them, and writes bench/RESULTS.md (or
# bench/results/quick.md with QUICK=1) with medians, min-max and the exact
# commands; a full run also refreshes the README's performance section.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
QUICK=${QUICK:-}
if [ -n "$QUICK" ]; then T=3; R=1; BIG=10000; else T=${BENCH_SECONDS:-30}; R=${BENCH_RUNS:-3}; BIG=100000; fi
CLIENTS=2
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi

echo "== build and install"
make -C "$top" -s PG_CONFIG=$PG_CONFIG with_llvm=no all test/natsdump
$SUDO make -C "$top" -s PG_CONFIG=$PG_CONFIG with_llvm=no install
cc -O2 -Wall -o "$top/bench/natspub" "$top/bench/natspub.c" -lnats -luuid

. "$top/examples/servers.sh"
servers_start "shared_preload_libraries = 'state_hub_events'
state_hub_events.database = 'bench'
state_hub_events.max_backlog_events = 0
state_hub_events.max_events_per_transaction = 1000000
max_connections = 50"
echo "== servers: $NATS_URL, PostgreSQL port $PGPORT, $T s per run, $R alternating runs"
BENCH_DB=bench
$PSQL -d postgres -c "CREATE DATABASE $BENCH_DB" >/dev/null
$PSQL -d $BENCH_DB -f "$top/bench/setup.sql" >/dev/null
PB="$AS_USER env PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=postgres $PGBENCH"

# pgbench scripts
for v in plain notify outbox emit; do
    cat >"$WORK/ins1_$v.sql" <<SQL
\set r random(1, 1000000)
INSERT INTO t_$v (repo_id, slug, payload) VALUES (:r, 'repo-' || :r, repeat('x', 100));
SQL
    cat >"$WORK/ins10_$v.sql" <<SQL
\set r random(1, 1000000)
INSERT INTO t_$v (repo_id, slug, payload) SELECT :r + g, 'repo-' || g, repeat('x', 100) FROM generate_series(1, 10) g;
SQL
done
echo "UPDATE hot_plain SET n = n + 1 WHERE id = 1;" >"$WORK/hot_plain.sql"
echo "UPDATE hot_emit SET n = n + 1 WHERE id = 1;" >"$WORK/hot_emit.sql"
[ -z "$AS_USER" ] || chown postgres: "$WORK"/*.sql

RAW="$WORK/raw.tsv"    # variant shape run tps lat_ms p99_ms xacts landed
: >"$RAW"

reset_tables() {
    # the durable outbox must have drained before the next run starts
    for _ in $(seq 1 1200); do
        [ "$($PSQL -d $BENCH_DB -At -c 'SELECT count(*) FROM state_hub_events.outbox')" = 0 ] && break
        sleep 0.1
    done
    $PSQL -d $BENCH_DB -c "TRUNCATE t_plain, t_notify, t_outbox, t_emit, outbox; CHECKPOINT;" >/dev/null
    "$NATSDUMP" "$NATS_URL" purge ACTIVITY_EVENTS >/dev/null 2>&1 || true
}

# worker_publishing on|off: with nats_url empty the durable worker only
# counts the backlog (once a second), so a run measures the committing side
# alone; the backlog is published once the URL is back.
worker_publishing() {
    if [ "$1" = off ]; then
        $PSQL -d postgres -c "ALTER SYSTEM SET state_hub_events.nats_url = ''" -c "SELECT pg_reload_conf()" >/dev/null
    else
        $PSQL -d postgres -c "ALTER SYSTEM RESET state_hub_events.nats_url" -c "SELECT pg_reload_conf()" >/dev/null
    fi
    sleep 0.5
}

# run_pgbench VARIANT SCRIPT SHAPE RUN [PGOPTIONS] [CLIENTS]
run_pgbench() {
    local variant=$1 script=$2 shape=$3 run=$4 opts=${5:-} clients=${6:-$CLIENTS}
    local logdir="$WORK/log_${variant}_${shape}_$run"
    mkdir -p "$logdir"; [ -z "$AS_USER" ] || chown postgres: "$logdir"
    reset_tables
    local out
    [[ $variant != *_paused ]] || worker_publishing off
    out=$(cd "$logdir" && $AS_USER env PGOPTIONS="$opts" PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=postgres \
        $PGBENCH -n -c "$clients" -j "$clients" -T "$T" -f "$WORK/$script" -l --log-prefix="$logdir/pgbench" $BENCH_DB 2>&1) ||
        { echo "pgbench failed for $variant x$shape run $run:"; echo "$out" | tail -20; exit 1; }
    [[ $variant != *_paused ]] || worker_publishing on
    local tps lat xacts p99 landed=-
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    p99=$(cat "$logdir"/pgbench* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f", a[i]/1000}')
    if [[ $variant == emit* ]]; then
        local want=$(( xacts * shape )) have=0
        for _ in $(seq 1 1200); do
            have=$("$NATSDUMP" "$NATS_URL" info ACTIVITY_EVENTS | sed -n 's/.*"messages":\([0-9]*\).*/\1/p')
            [ "${have:-0}" -ge "$want" ] && break
            sleep 0.1
        done
        landed="$have/$want"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$shape" "$run" "$tps" "$lat" "$p99" "$xacts" "$landed" >>"$RAW"
    echo "   $variant x$shape run $run: $tps tps, $lat ms mean, $p99 ms p99${landed:+, landed $landed}"
}

echo "== pgbench: -c$CLIENTS -j$CLIENTS -T$T, alternating variants"
for run in $(seq 1 "$R"); do
    for shape in 1 10; do
        run_pgbench plain "ins${shape}_plain.sql" $shape $run
        run_pgbench notify "ins${shape}_notify.sql" $shape $run
        run_pgbench outbox "ins${shape}_outbox.sql" $shape $run
        run_pgbench emit_ack "ins${shape}_emit.sql" $shape $run "-c state_hub_events.wait_for_ack=on"
        run_pgbench emit_noack "ins${shape}_emit.sql" $shape $run "-c state_hub_events.wait_for_ack=off"
        run_pgbench emit_durable "ins${shape}_emit.sql" $shape $run "-c state_hub_events.delivery=durable"
        run_pgbench emit_durable_paused "ins${shape}_emit.sql" $shape $run "-c state_hub_events.delivery=durable"
    done
done

echo "== lock hold: one hot row"
for run in $(seq 1 "$R"); do
    run_pgbench hot_plain hot_plain.sql 1 $run
    run_pgbench hot_emit_ack hot_emit.sql 1 $run "-c state_hub_events.wait_for_ack=on"
done

echo "== commit publish time of a 1-event transaction (one client), and the raw round trip"
COMMIT_LAT="$WORK/commit_lat.tsv"; : >"$COMMIT_LAT"
for run in $(seq 1 "$R"); do
    $PSQL -d $BENCH_DB -c "SELECT state_hub_events.stats_reset()" >/dev/null
    run_pgbench emit_ack1c "ins1_emit.sql" 1 $run "-c state_hub_events.wait_for_ack=on" 1
    stats=$($PSQL -d $BENCH_DB -At -F ' ' -c "SELECT round(commit_publish_p50_ms::numeric * 1000), round(commit_publish_p99_ms::numeric * 1000) FROM state_hub_events.stats()")
    rtt=$("$top/bench/natspub" "$NATS_URL" rtt 2000)
    echo "   run $run: COMMIT publish p50/p99 us: $stats; raw nats.c publish+ack: $rtt"
    printf '%s %s\n' "$stats" "$(awk '{print $2, $4}' <<<"$rtt")" >>"$COMMIT_LAT"
done

echo "== one transaction of $BIG events vs raw nats.c async"
BIGT="$WORK/big.tsv"; : >"$BIGT"
# big_script TABLE FILE: one INSERT of $BIG rows, timed, then the backend's peak RSS
big_script() {
    cat >"$2" <<SQL
SELECT pg_backend_pid() AS pid \gset
\timing on
INSERT INTO $1 (repo_id, slug, payload) SELECT g, 'repo-' || g, repeat('x', 100) FROM generate_series(1, $BIG) g;
\timing off
SELECT 'hwm', (regexp_match(pg_read_file('/proc/' || :pid || '/status'), 'VmHWM:\s+(\d+)'))[1];
SQL
}
big_script t_emit "$WORK/big.sql"
big_script t_plain "$WORK/big_plain.sql"
[ -z "$AS_USER" ] || chown postgres: "$WORK"/big*.sql
for run in $(seq 1 "$R"); do
    reset_tables
    $PSQL -d $BENCH_DB -c "SELECT state_hub_events.stats_reset()" >/dev/null
    e=$($PSQL -d $BENCH_DB -At -f "$WORK/big.sql" 2>&1)
    e_pub=$($PSQL -d $BENCH_DB -At -c "SELECT round(commit_publish_p50_ms::numeric) FROM state_hub_events.stats()")
    e_ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$e"); e_kb=$(sed -n 's/^hwm|//p' <<<"$e")
    reset_tables
    p=$($PSQL -d $BENCH_DB -At -f "$WORK/big_plain.sql" 2>&1)
    p_ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$p"); p_kb=$(sed -n 's/^hwm|//p' <<<"$p")
    reset_tables
    raw=$("$top/bench/natspub" "$NATS_URL" async "$BIG")
    raw_rate=$(awk '{print $2}' <<<"$raw")
    ext_rate=$(awk -v n="$BIG" -v ms="$e_ms" 'BEGIN {printf "%.0f", n / (ms / 1000)}')
    raw_s=$(awk '{print $4}' <<<"$raw")
    echo "   run $run: extension $ext_rate events/s (${e_ms} ms, ${e_pub} ms publishing at COMMIT, backend peak RSS ${e_kb} kB; plain insert ${p_ms} ms, ${p_kb} kB); raw nats.c $raw_rate msgs/s (${raw_s} s)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ext_rate" "$e_ms" "$e_kb" "$p_ms" "$p_kb" "$raw_rate" "$e_pub" "$raw_s" >>"$BIGT"
done

versions="PostgreSQL $($PSQL -d postgres -At -c 'SHOW server_version'), nats-server $(nats-server --version | awk '{print $NF}'), nats.c $(dpkg-query -W -f='${Version}' libnats3.4 2>/dev/null || echo '?')"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')

if [ -n "$QUICK" ]; then out="$top/bench/results/quick.md"; mkdir -p "$top/bench/results"; else out="$top/bench/RESULTS.md"; fi
perl "$top/bench/report.pl" "$RAW" "$COMMIT_LAT" "$BIGT" \
    "$(date -u +%Y-%m-%d)" "$(nproc) cores, $cpu" "$versions" "$T" "$R" "$CLIENTS" "$BIG" >"$out"
echo "== results: $out"
cat "$out"

if [ -z "$QUICK" ]; then
    perl "$top/bench/report.pl" --readme "$out" "$top/README.md"
    echo "== README performance section refreshed"
fi
