#!/usr/bin/env bash
#
# deb-smoke.sh
#    Smoke test of the installed Debian package(s): for every installed
#    postgresql-NN-state-hub-events, a throwaway cluster (pg_virtualenv) and
#    nats-server, CREATE EXTENSION at the control file's version, one event
#    published and read back through ping()'s stream facts.  Run as root
#    after installing the package (test/matrix.sh does, in its roots).
#
# IDENTIFICATION
#    test/deb-smoke.sh
#
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
want=$(sed -nE "s/^default_version = '(.*)'/\1/p" "$top/state_hub_events.control")
pkgs=$(dpkg-query -W -f='${Package} ${Status}\n' 'postgresql-*-state-hub-events' 2>/dev/null |
       awk '/install ok installed/ {print $1}')
[ -n "$pkgs" ] || { echo "deb-smoke: no postgresql-NN-state-hub-events installed" >&2; exit 1; }

tmp=$(mktemp -d /tmp/state_hub_events_smoke.XXXXXX)
nats_pid=
cleanup() {
    local rc=$?
    if [ -n "$nats_pid" ]; then
        kill "$nats_pid" 2>/dev/null
        wait "$nats_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

# a nats-server with JetStream on a free loopback port
for port in $(shuf -i 20000-60000 -n 20); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
nats-server -js -a 127.0.0.1 -p "$port" -sd "$tmp/js" >"$tmp/nats.log" 2>&1 &
nats_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

for pkg in $pkgs; do
    v=$(echo "$pkg" | sed -E 's/^postgresql-([0-9]+)-.*/\1/')
    echo "== $pkg: $(dpkg-query -W -f='${Version}' "$pkg")"
    dpkg -L "$pkg" | grep -E '\.so$|\.control$'
    # publishing needs the library preloaded (the publisher process reads
    # nats_url from postgresql.conf)
    WANT=$want pg_virtualenv -v "$v" -o "shared_preload_libraries=state_hub_events" \
        -o "state_hub_events.nats_url=nats://127.0.0.1:$port" bash -ec '
        q() { psql -X -v ON_ERROR_STOP=1 -At "$@"; }
        q -c "CREATE EXTENSION state_hub_events"
        got=$(q -c "SELECT extversion FROM pg_extension WHERE extname = '\''state_hub_events'\''")
        [ "$got" = "$WANT" ] || { echo "extension version $got, want $WANT"; exit 1; }
        q -c "SELECT state_hub_events.publish('\''org.smoke.tested'\'', '\''{\"ok\": true}'\'')" >/dev/null
        # the publisher process sends it after COMMIT: ask until it is stored
        n=
        for _ in $(seq 100); do
            n=$(q -c "SELECT state_hub_events.ping()->>'\''messages'\''" 2>/dev/null) || n=
            [ "$n" = 1 ] && break
            sleep 0.1
        done
        [ "$n" = 1 ] || { echo "the stream holds ${n:-no} messages, want 1"; exit 1; }
        echo "extension $got: one event published and stored"
    '
done
echo "deb-smoke: ok"
