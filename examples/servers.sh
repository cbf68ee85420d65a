# examples/servers.sh
#    Sourced by the demo (and the benchmarks): start a throwaway nats-server
#    with JetStream and a throwaway PostgreSQL on free loopback ports in a
#    private directory, as an unprivileged user when run as root, and stop
#    both by pid on exit.
#
#    After servers_start: $WORK, $NATS_URL, $PGHOST (a socket directory),
#    $PGPORT, $PSQL (a psql command line), $NATSDUMP.

PG_BIN=$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NATSDUMP="$TOP/test/natsdump"

if [ "$(id -u)" -eq 0 ]; then AS_USER="runuser -u postgres --"; else AS_USER=; fi

free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$(( (RANDOM % 20000) + 30000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    return 1
}

servers_stop() {
    if [ -n "${PG_STARTED:-}" ]; then
        $AS_USER "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
        PG_STARTED=
    fi
    if [ -n "${NATS_PID:-}" ]; then
        kill "$NATS_PID" 2>/dev/null; wait "$NATS_PID" 2>/dev/null || true
        NATS_PID=
    fi
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}

# servers_start [extra postgresql.conf lines]
servers_start() {
    WORK=$(mktemp -d /tmp/state_hub_events.XXXXXX)
    chmod 755 "$WORK"
    [ -z "$AS_USER" ] || chown postgres: "$WORK"
    trap servers_stop EXIT

    local nport; nport=$(free_port)
    NATS_URL="nats://127.0.0.1:$nport"
    nats-server -js -a 127.0.0.1 -p "$nport" -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
    NATS_PID=$!
    # JetStream is ready once the stream API answers (give up after 30 s)
    local deadline=$((SECONDS + 30))
    until "$NATSDUMP" "$NATS_URL" info PROBE >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "timed out after 30 s waiting for nats-server (JetStream) at $NATS_URL:" >&2
            cat "$WORK/nats.log" >&2
            return 1
        fi
        sleep 0.1
    done

    PGPORT=$(free_port)
    PGHOST="$WORK"
    $AS_USER "$PG_BIN/initdb" -D "$WORK/pg" -A trust -U postgres >"$WORK/initdb.log" 2>&1 || {
        cat "$WORK/initdb.log"; return 1; }
    cat >>"$WORK/pg/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$WORK'
port = $PGPORT
state_hub_events.nats_url = '$NATS_URL'
${1:-}
CONF
    $AS_USER "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null || {
        cat "$WORK/pg.log"; return 1; }
    PG_STARTED=1
    PSQL="$AS_USER psql -X -q -v ON_ERROR_STOP=1 -h $PGHOST -p $PGPORT -U postgres"
}
