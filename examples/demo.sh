#!/usr/bin/env bash
# make demo: build and install the extension, start a throwaway nats-server
# (JetStream) and PostgreSQL on loopback, run the state hub example, and print
# each envelope as it arrives in the stream: one JSON line with its
# Nats-Msg-Id header.  Stops what it started.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}   # another installation: make demo PG_CONFIG=...

echo "== building and installing state_hub_events"
make -C "$top" -s PG_CONFIG=$PG_CONFIG with_llvm=no all test/natsdump
$SUDO make -C "$top" -s PG_CONFIG=$PG_CONFIG with_llvm=no install

. "$top/examples/servers.sh"
servers_start "shared_preload_libraries = 'state_hub_events'"
echo "== nats-server (JetStream) at $NATS_URL, PostgreSQL on port $PGPORT (socket in $WORK)"

seq=1
show_new() {
    local out
    out=$("$NATSDUMP" "$NATS_URL" envelopes ACTIVITY_EVENTS "$seq")
    if [ -n "$out" ]; then
        printf '%s\n' "$out" | sed 's/^/   /'
        seq=$(( seq + $(printf '%s\n' "$out" | wc -l) ))
    else
        echo "   (nothing published)"
    fi
}

step() {
    local label=$1 sql=$2
    echo
    echo "-- $label"
    $PSQL -d hub -c "$sql" >/dev/null
    show_new
}

$PSQL -d postgres -c "CREATE DATABASE hub" >/dev/null
$PSQL -d hub -c "CREATE EXTENSION state_hub_events" >/dev/null
$PSQL -d hub -f "$top/examples/state_hub/schema.sql" >/dev/null
$PSQL -d hub -f "$top/examples/state_hub/events.sql" >/dev/null
$PSQL -d hub -c "SELECT state_hub_events.ping()" -At | sed 's/^/== ping(): /'

step "the application role registers a domain and a repo (org.statehub.repo.registered)" "
SET ROLE hub_app;
INSERT INTO hub.domains (slug, name) VALUES ('custodian', 'Custodian');
INSERT INTO hub.repos (slug, domain_id, remote_url)
     SELECT 'state-hub', id, 'git@example.org:org/state-hub.git' FROM hub.domains WHERE slug = 'custodian';"

step "a rolled-back registration publishes nothing" "
BEGIN;
SET LOCAL ROLE hub_app;
INSERT INTO hub.repos (slug, domain_id) SELECT 'never', id FROM hub.domains WHERE slug = 'custodian';
ROLLBACK;"

step "plan work: a topic, a workplan with two tasks untouched for 30 days (no event)" "
SET ROLE hub_app;
INSERT INTO hub.topics (domain_id, title) SELECT id, 'Eventing' FROM hub.domains WHERE slug = 'custodian';
INSERT INTO hub.workplans (slug, title, topic_id, repo_id, status)
     SELECT 'CUST-WP-0040', 'State hub NATS integration', t.id, r.id, 'active'
       FROM hub.topics t, hub.repos r WHERE t.title = 'Eventing' AND r.slug = 'state-hub';
INSERT INTO hub.tasks (workplan_id, title, updated_at)
     SELECT id, 'Write the consumer', now() - interval '30 days' FROM hub.workplans
     UNION ALL
     SELECT id, 'Document subjects', now() - interval '30 days' FROM hub.workplans;"

step "the workplan finishes (workplan.completed, then the legacy workstream.completed)" "
SET ROLE hub_app;
UPDATE hub.workplans SET status = 'finished', updated_at = now() WHERE slug = 'CUST-WP-0040';"

step "an update that leaves it finished publishes nothing" "
SET ROLE hub_app;
UPDATE hub.workplans SET status = 'finished', title = title || ' (v2)' WHERE slug = 'CUST-WP-0040';"

step "a decision is resolved (org.statehub.decision.resolved)" "
SET ROLE hub_app;
INSERT INTO hub.decisions (title, topic_id, workplan_id)
     SELECT 'Publish from the database', w.topic_id, w.id FROM hub.workplans w;
SELECT hub_events.resolve_decision(id, 'tegwick', 'Transactional publishing cannot be forgotten or be wrong.')
  FROM hub.decisions;"

step "a domain goal becomes active, then a second one supersedes it (domain.goal.activated)" "
SET ROLE hub_app;
INSERT INTO hub.domain_goals (domain_id, title, status) SELECT id, 'Events v1', 'active' FROM hub.domains;
INSERT INTO hub.domain_goals (domain_id, title) SELECT id, 'Events v2' FROM hub.domains;
UPDATE hub.domain_goals SET status = 'active' WHERE title = 'Events v2';"

step "an admin session sweeps stale tasks (org.statehub.task.stale, one per task)" "
SELECT hub_events.sweep_stale_tasks('14 days');"

echo
echo "== stats()"
$PSQL -d hub -c "SELECT scope, published, failed, unconfirmed FROM state_hub_events.stats()"
echo "== stream: $("$NATSDUMP" "$NATS_URL" info ACTIVITY_EVENTS)"
echo
echo "== the stream as transactions, ordered by commit key (examples/txn_consumer.py, docs/consumers.md)"
"$NATSDUMP" "$NATS_URL" dump ACTIVITY_EVENTS | python3 "$top/examples/txn_consumer.py" | sed 's/^/   /'
