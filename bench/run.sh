#!/usr/bin/env bash
# bench/run.sh — make bench [QUICK=1]
#
# Measures the commit path of state_hub_events against what users already
# know, side by side in one run on this machine: no trigger, a NOTIFY
# trigger, a hand-written outbox trigger, emit() in immediate mode (acks
# waited for, and not) and in durable mode, and raw nats.c; with 2 clients,
# 32 clients, and a new connection per transaction (pgbench -C).  Every
# pgbench run is bounded by its transaction count (-t), never by time.
# Starts its own nats-server and PostgreSQL on loopback (fsync and
# synchronous_commit on), stops them, and writes bench/RESULTS.md (or
# bench/results/quick.md with QUICK=1) with medians, min-max, the ratios the
# issue sets as targets and the exact commands; a full run also refreshes
# the README's performance section.
#
# PG_CONFIG picks the PostgreSQL to install into and run (a private copy
# made by test/private-pg.sh keeps the system's installation untouched).
# The publisher's batch sizes come from stats() (publisher_batches,
# publisher_events).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
QUICK=${QUICK:-}
# transactions per client: 2 clients (1-row and 10-row), 32 clients, new
# connection per transaction (2 clients), hot row, one client; rounds
if [ -n "$QUICK" ]; then
    T2=500; T10=150; T32=30; TC=40; THOT=300; T1=500; R=1; BIG=10000
else
    T2=3000; T10=1000; T32=150; TC=150; THOT=1500; T1=2000; R=${BENCH_RUNS:-3}; BIG=100000
fi
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGBENCH=$("$PG_CONFIG" --bindir)/pgbench
if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date +%s)

echo "== build and install ($PG_CONFIG)"
make -C "$top" -s PG_CONFIG="$PG_CONFIG" with_llvm=no all test/natsdump
$SUDO make -C "$top" -s PG_CONFIG="$PG_CONFIG" with_llvm=no install
cc -O2 -Wall -o "$top/bench/natspub" "$top/bench/natspub.c" -lnats -luuid

. "$top/examples/servers.sh"
servers_start "shared_preload_libraries = 'state_hub_events'
state_hub_events.database = 'bench'
state_hub_events.max_backlog_events = 0
state_hub_events.max_events_per_transaction = 1000000
max_connections = 50
fsync = on
synchronous_commit = on"
echo "== servers: $NATS_URL, PostgreSQL port $PGPORT, $R round(s), load average $LOAD_START"
BENCH_DB=bench
$PSQL -d postgres -c "CREATE DATABASE $BENCH_DB" >/dev/null
$PSQL -d $BENCH_DB -f "$top/bench/setup.sql" >/dev/null
PM_PID=$(head -1 "$WORK/pg/postmaster.pid")

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

RAW="$WORK/raw.tsv"    # group variant shape run tps lat_ms p99_ms xacts landed batches events
: >"$RAW"

# The publisher's counters: the groups it sent (one write and one wait
# for acknowledgements each) and the events in them, from stats().
publisher_counters() {
    $PSQL -d $BENCH_DB -At -F ' ' -c "SELECT publisher_batches, publisher_events FROM state_hub_events.stats()"
}

outbox_empty() {
    [ "$($PSQL -d $BENCH_DB -At -c 'SELECT count(*) FROM state_hub_events.outbox')" = 0 ]
}

reset_tables() {
    # the durable outbox must have drained before the next run starts
    for _ in $(seq 1 1200); do outbox_empty && break; sleep 0.1; done
    $PSQL -d $BENCH_DB -c "TRUNCATE t_plain, t_notify, t_outbox, t_emit, outbox; CHECKPOINT;" >/dev/null
    "$NATSDUMP" "$NATS_URL" purge ACTIVITY_EVENTS >/dev/null 2>&1 || true
}

stream_messages() {
    "$NATSDUMP" "$NATS_URL" info ACTIVITY_EVENTS | sed -n 's/.*"messages":\([0-9]*\).*/\1/p'
}

# worker_publishing on|off: with nats_url empty the durable worker only
# counts the backlog, so a run measures the committing side alone; the
# backlog is published once the URL is back.
worker_publishing() {
    if [ "$1" = off ]; then
        $PSQL -d postgres -c "ALTER SYSTEM SET state_hub_events.nats_url = ''" -c "SELECT pg_reload_conf()" >/dev/null
    else
        $PSQL -d postgres -c "ALTER SYSTEM RESET state_hub_events.nats_url" -c "SELECT pg_reload_conf()" >/dev/null
    fi
    sleep 0.5
}

# CPU time (clock ticks) of one process, its threads included
proc_ticks() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
# The postmaster's children's CPU as it reaps them (the sessions of a
# pgbench run), and the live publisher, durable worker and nats-server:
# "sessions publisher worker nats" in clock ticks.
cpu_ticks() {
    local pub wrk
    pub=$(pgrep -P "$PM_PID" -f "state_hub_events publisher" | head -1 || true)
    wrk=$(pgrep -P "$PM_PID" -f "state_hub_events worker" | head -1 || true)
    echo "$(sed 's/.*) //' "/proc/$PM_PID/stat" | awk '{print $14 + $15}') $(proc_ticks "$pub") $(proc_ticks "$wrk") $(proc_ticks "$NATS_PID")"
}
CLK_TCK=$(getconf CLK_TCK)

# run_pgbench GROUP VARIANT SCRIPT SHAPE RUN CLIENTS XACTS_PER_CLIENT [PGOPTIONS] [-C]
run_pgbench() {
    local group=$1 variant=$2 script=$3 shape=$4 run=$5 clients=$6 t=$7 opts=${8:-} connect=${9:-}
    local logdir="$WORK/log_${group}_${variant}_${shape}_$run"
    mkdir -p "$logdir"; [ -z "$AS_USER" ] || chown postgres: "$logdir"
    reset_tables
    local out before after
    [[ $variant != *_paused ]] || worker_publishing off
    before=$(publisher_counters)
    read -r c0 p0 w0 n0 <<<"$(cpu_ticks)"
    out=$(cd "$logdir" && $AS_USER env PGOPTIONS="$opts" PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=postgres \
        $PGBENCH -n $connect -c "$clients" -j "$(( clients < 2 ? clients : 2 ))" -t "$t" -f "$WORK/$script" \
        -l --log-prefix="$logdir/pgbench" $BENCH_DB 2>&1) ||
        { echo "pgbench failed for $group $variant x$shape run $run:"; echo "$out" | tail -20; exit 1; }
    sleep 0.2    # the sessions exit and are reaped
    read -r c1 p1 w1 n1 <<<"$(cpu_ticks)"
    [[ $variant != *_paused ]] || worker_publishing on
    local tps lat xacts p99 landed=-
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    p99=$(cat "$logdir"/pgbench* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f", a[i]/1000}')
    if [[ $variant == emit* || $variant == hot_emit* ]]; then
        local want=$(( xacts * shape )) have=0
        for _ in $(seq 1 1200); do
            have=$(stream_messages)
            [ "${have:-0}" -ge "$want" ] && break
            sleep 0.1
        done
        landed="$have/$want"
    fi
    after=$(publisher_counters)
    local pb=- pe=-
    if [[ $before != "- -" && $variant != emit_durable* ]]; then
        read -r b0 e0 <<<"$before"; read -r b1 e1 <<<"$after"
        pb=$(( b1 - b0 )); pe=$(( e1 - e0 ))
    fi
    # CPU per transaction, microseconds: sessions, publisher, worker,
    # nats-server (the worker's is what it spent during the run; the
    # events it publishes later are not in it)
    local us
    us=$(awk -v x="$xacts" -v hz="$CLK_TCK" -v c="$((c1 - c0))" -v p="$((p1 - p0))" -v w="$((w1 - w0))" -v n="$((n1 - n0))" \
        'BEGIN {f = 1e6 / hz / (x > 0 ? x : 1); printf "%.0f/%.0f/%.0f/%.0f", c * f, p * f, w * f, n * f}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$group" "$variant" "$shape" "$run" "$tps" "$lat" "$p99" "$xacts" "$landed" "$pb" "$pe" "$us" >>"$RAW"
    local per=""
    [ "$pb" = - ] || [ "$pb" -eq 0 ] || per=", $(awk -v e="$pe" -v b="$pb" 'BEGIN {printf "%.1f", e / b}') events per publisher write"
    echo "   $group $variant x$shape run $run: $tps tps, $lat ms mean, $p99 ms p99${landed:+, landed $landed}$per; CPU us/txn sessions/publisher/worker/nats $us"
}

ACK="-c state_hub_events.wait_for_ack=on"
NOACK="-c state_hub_events.wait_for_ack=off"
DURABLE="-c state_hub_events.delivery=durable"

# one_round GROUP SHAPE CLIENTS XACTS [-C] [with_paused]: every variant once
one_round() {
    local group=$1 shape=$2 clients=$3 t=$4 connect=$5 paused=$6 run=$7
    run_pgbench "$group" plain "ins${shape}_plain.sql" "$shape" "$run" "$clients" "$t" "" "$connect"
    run_pgbench "$group" notify "ins${shape}_notify.sql" "$shape" "$run" "$clients" "$t" "" "$connect"
    run_pgbench "$group" outbox "ins${shape}_outbox.sql" "$shape" "$run" "$clients" "$t" "" "$connect"
    run_pgbench "$group" emit_ack "ins${shape}_emit.sql" "$shape" "$run" "$clients" "$t" "$ACK" "$connect"
    run_pgbench "$group" emit_noack "ins${shape}_emit.sql" "$shape" "$run" "$clients" "$t" "$NOACK" "$connect"
    run_pgbench "$group" emit_durable "ins${shape}_emit.sql" "$shape" "$run" "$clients" "$t" "$DURABLE" "$connect"
    [ "$paused" = no ] ||
        run_pgbench "$group" emit_durable_paused "ins${shape}_emit.sql" "$shape" "$run" "$clients" "$t" "$DURABLE" "$connect"
}

echo "== pgbench, -t per client: 2 clients ($T2; $T10 for 10 rows), 32 clients ($T32), -C ($TC); variants alternate"
for run in $(seq 1 "$R"); do
    one_round c2 1 2 "$T2" "" yes "$run"
    one_round c2 10 2 "$T10" "" yes "$run"
    one_round c32 1 32 "$T32" "" yes "$run"
    one_round connect 1 2 "$TC" -C no "$run"
    run_pgbench hot hot_plain hot_plain.sql 1 "$run" 2 "$THOT"
    run_pgbench hot hot_emit_ack hot_emit.sql 1 "$run" 2 "$THOT" "$ACK"
done

echo "== commit publish time of a 1-event transaction (one client), and the raw round trip"
COMMIT_LAT="$WORK/commit_lat.tsv"; : >"$COMMIT_LAT"
for run in $(seq 1 "$R"); do
    $PSQL -d $BENCH_DB -c "SELECT state_hub_events.stats_reset()" >/dev/null
    run_pgbench c1 emit_ack "ins1_emit.sql" 1 "$run" 1 "$T1" "$ACK"
    stats=$($PSQL -d $BENCH_DB -At -F ' ' -c "SELECT round(commit_publish_p50_ms::numeric * 1000), round(commit_publish_p99_ms::numeric * 1000) FROM state_hub_events.stats()")
    rtt=$("$top/bench/natspub" "$NATS_URL" rtt 2000)
    # the same round trip spaced like one client's commits (informational:
    # the bar compares with the back-to-back loop above)
    rtt_gap=$("$top/bench/natspub" "$NATS_URL" rtt 2000 600)
    echo "   run $run: COMMIT publish p50/p99 us: $stats; raw nats.c publish+ack: $rtt; 600 us apart: $rtt_gap"
    printf '%s %s %s\n' "$stats" "$(awk '{print $2, $4}' <<<"$rtt")" "$(awk '{print $2, $4}' <<<"$rtt_gap")" >>"$COMMIT_LAT"
done

echo "== one transaction of $BIG events vs raw nats.c async"
BIGT="$WORK/big.tsv"; : >"$BIGT"
# big_script TABLE FILE: one INSERT of $BIG rows, timed (BEGIN to COMMIT's return)
big_script() {
    cat >"$2" <<SQL
\timing on
INSERT INTO $1 (repo_id, slug, payload) SELECT g, 'repo-' || g, repeat('x', 100) FROM generate_series(1, $BIG) g;
SQL
}
big_script t_emit "$WORK/big.sql"
big_script t_plain "$WORK/big_plain.sql"
[ -z "$AS_USER" ] || chown postgres: "$WORK"/big*.sql
# memwatched CMD...: run CMD while memwatch.pl samples; sets MEM
memwatched() {
    local stop="$WORK/memwatch.stop" out="$WORK/memwatch.out"
    rm -f "$stop"
    perl "$top/bench/memwatch.pl" "$PM_PID" "$stop" >"$out" &
    local watcher=$!
    CMD_OUT=$("$@" 2>&1)
    touch "$stop"; wait "$watcher"
    MEM=$(cat "$out")
}
for run in $(seq 1 "$R"); do
    reset_tables
    $PSQL -d $BENCH_DB -c "SELECT state_hub_events.stats_reset()" >/dev/null
    before=$(publisher_counters)
    memwatched $AS_USER env PGOPTIONS="-c state_hub_events.publish_timeout=60000 $ACK" \
        psql -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres -d $BENCH_DB -At -f "$WORK/big.sql"
    e=$CMD_OUT; e_mem=$MEM
    after=$(publisher_counters)
    e_pub=$($PSQL -d $BENCH_DB -At -c "SELECT round(commit_publish_p50_ms::numeric) FROM state_hub_events.stats()")
    e_ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$e")
    e_kb=$(awk '{print $2}' <<<"$e_mem"); pub_kb=$(awk '{print $4}' <<<"$e_mem")
    landed=$(stream_messages)
    nb=-
    if [ "$before" != "- -" ]; then
        read -r b0 e0 <<<"$before"; read -r b1 e1 <<<"$after"; nb="$(( b1 - b0 ))"
    fi
    reset_tables
    memwatched $PSQL -d $BENCH_DB -At -f "$WORK/big_plain.sql"
    p_ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$CMD_OUT"); p_kb=$(awk '{print $2}' <<<"$MEM")
    reset_tables
    raw=$("$top/bench/natspub" "$NATS_URL" async "$BIG")
    raw_rate=$(awk '{print $2}' <<<"$raw"); raw_s=$(awk '{print $4}' <<<"$raw"); raw_kb=$(awk '{print $6}' <<<"$raw")
    ext_rate=$(awk -v n="$BIG" -v ms="$e_ms" 'BEGIN {printf "%.0f", n / (ms / 1000)}')
    echo "   run $run: extension $ext_rate events/s (${e_ms} ms, ${e_pub} ms publishing at COMMIT, $landed landed, $nb publisher writes; peak private memory: backend ${e_kb} kB, publisher ${pub_kb} kB; plain insert ${p_ms} ms, ${p_kb} kB); raw nats.c $raw_rate msgs/s (${raw_s} s, ${raw_kb} kB)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ext_rate" "$e_ms" "$e_kb" "$p_ms" "$p_kb" "$raw_rate" "$e_pub" "$raw_s" "$pub_kb" "$raw_kb" "$landed" "$nb" >>"$BIGT"
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
MINUTES=$(( ($(date +%s) - STARTED + 30) / 60 ))
versions="PostgreSQL $($PSQL -d postgres -At -c 'SHOW server_version'), nats-server $(nats-server --version | awk '{print $NF}'), nats.c $(dpkg-query -W -f='${Version}' libnats3.4 2>/dev/null || echo '?')"
settings=$($PSQL -d postgres -At -c "SELECT string_agg(name || ' = ' || setting, ', ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'state_hub_events.queue_size', 'state_hub_events.publish_timeout')")
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')

if [ -n "$QUICK" ]; then out="$top/bench/results/quick.md"; else out="$top/bench/RESULTS.md"; fi
# keep the measurements: bench/results/last/report.sh rewrites the report
# from them (after editing bench/analysis.md, say)
keep="$top/bench/results/last"
mkdir -p "$keep"; cp "$RAW" "$COMMIT_LAT" "$BIGT" "$keep/"
args=("$keep/raw.tsv" "$keep/commit_lat.tsv" "$keep/big.tsv"
      "$(date -u +%Y-%m-%d)" "$(nproc) cores, $cpu" "$versions" "$settings"
      "$R" "$BIG" "$T2 $T10 $T32 $TC $THOT $T1" "$LOAD_START" "$LOAD_END" "$MINUTES")
{ echo "# bench/results/last/report.sh > $out"; printf 'perl %q' "$top/bench/report.pl"; printf ' %q' "${args[@]}"; echo; } >"$keep/report.sh"
perl "$top/bench/report.pl" "${args[@]}" >"$out"
echo "== results: $out ($MINUTES min; load average $LOAD_START at the start, $LOAD_END at the end)"
cat "$out"

if [ -z "$QUICK" ]; then
    perl "$top/bench/report.pl" --readme "$out" "$top/README.md"
    echo "== README performance section refreshed"
fi
