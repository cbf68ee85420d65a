
# 112_outbox_lock_index.pl
#    053/098's lock queue through the outbox's index: "ALTER INDEX
#    <own partitioned index> ATTACH PARTITION state_hub_events.outbox_pkey"
#    locks that index ACCESS EXCLUSIVE before any privilege check
#    (PostgreSQL's RangeVarCallbackForAttachIndex checks none; the command
#    fails only once it has the lock: the index is on no partition).  Every
#    durable commit opens outbox_pkey ROW EXCLUSIVE to insert its rows.  A
#    member of pg_monitor holds ACCESS SHARE on outbox_pkey for as long as
#    she likes (backlog() plans a query on the outbox, which locks its
#    indexes until the transaction ends; PREPARE TRANSACTION keeps them),
#    queues the ATTACH behind it, and every durable commit waits behind
#    the request.  Now refused before the lock, like ATTACH PARTITION of
#    the table itself.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('outbox_lock_index', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
max_prepared_transactions = 2
});

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN IN ROLE pg_monitor;
CREATE SCHEMA m AUTHORIZATION mallory;
SET ROLE mallory;
CREATE TABLE m.pt (seq bigint) PARTITION BY RANGE (seq);
CREATE INDEX pt_idx ON ONLY m.pt (seq);
});

# mallory's prepared transaction holds ACCESS SHARE on the outbox's
# indexes (backlog() planned a query on the outbox)
$node->safe_psql('postgres', q{
BEGIN;
SELECT events >= 0 FROM state_hub_events.backlog();
PREPARE TRANSACTION 'hold';
}, extra_params => [ '-U', 'mallory' ]);
ok($node->safe_psql('postgres', q{SELECT count(*) FROM pg_locks
                                   WHERE relation = 'state_hub_events.outbox_pkey'::regclass
                                     AND mode = 'AccessShareLock' AND granted}) >= 1,
    'the prepared transaction holds ACCESS SHARE on outbox_pkey');

for my $sql (
    'ALTER INDEX m.pt_idx ATTACH PARTITION state_hub_events.outbox_pkey',
    'SET search_path = state_hub_events; ALTER INDEX m.pt_idx ATTACH PARTITION outbox_pkey',
    'ALTER INDEX m.pt_idx ATTACH PARTITION state_hub_events.rejected_pkey')
{
    my ($ret, $out, $err) = $node->psql('postgres', "SET lock_timeout = '50ms'; $sql",
        extra_params => [ '-U', 'mallory' ]);
    like($err, qr/permission denied for index (outbox|rejected)_pkey/, "refused before the lock: $sql");
}

# without lock_timeout, in the background: while such a request waits, a
# durable commit (its INSERT opens outbox_pkey) would wait behind it
my $bg = $node->background_psql('postgres', on_error_stop => 0,
    extra_params => [ '-U', 'mallory' ]);
$bg->query_until(qr/go/, q{\echo go
ALTER INDEX m.pt_idx ATTACH PARTITION state_hub_events.outbox_pkey;
});
ok(wait_until('the ATTACH ends or waits for its lock', 30, sub {
    $node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
                                    WHERE usename = 'mallory' AND query LIKE 'ALTER INDEX%'
                                      AND (state = 'idle' OR wait_event_type = 'Lock')}) eq '1' }),
    'the ATTACH was refused or waits');
my ($ret, $out, $err) = $node->psql('postgres',
    q{SET lock_timeout = '5s'; SELECT state_hub_events.publish('org.t.victim') IS NOT NULL},
    timeout => 60);
is($out, 't', 'a durable commit goes on');
like($err, qr/^$/, 'without error');
# (on the unguarded code the ATTACH still waits: end it)
$node->safe_psql('postgres', q{SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity
                                WHERE usename = 'mallory' AND query LIKE 'ALTER INDEX%' AND state = 'active'});
$bg->quit;

# the same name earlier on her search_path: the guard's lookup (no lock)
# finds her own m.outbox_pkey, but if she drops it in another session
# while the command waits for its lock, PostgreSQL's own lookup lands on
# the extension's index.  So the extension's namesake is checked too.
$node->safe_psql('postgres', q{
SET ROLE mallory;
CREATE TABLE m.t (i int);
CREATE INDEX outbox_pkey ON m.t (i);
});
my $dropper = $node->background_psql('postgres', on_error_stop => 0,
    extra_params => [ '-U', 'mallory' ]);
$dropper->query_safe('BEGIN; DROP INDEX m.outbox_pkey;');
($ret, $out, $err) = $node->psql('postgres', q{SET lock_timeout = '3s';
    SET search_path = m, state_hub_events;
    ALTER INDEX m.pt_idx ATTACH PARTITION outbox_pkey},
    extra_params => [ '-U', 'mallory' ], timeout => 60);
like($err, qr/permission denied for index outbox_pkey.*\n.*HINT:  Qualify the name/s,
    'a name that can also reach the extension\'s index is refused before the lock');
$dropper->query_safe('ROLLBACK;');
$dropper->quit;
($ret, $out, $err) = $node->psql('postgres', q{SET lock_timeout = '3s';
    ALTER INDEX m.pt_idx ATTACH PARTITION outbox_pkey},
    extra_params => [ '-U', 'mallory' ], timeout => 60);
unlike($err, qr/permission denied/, 'without the extension\'s schema on the path it is hers');

# the owner (a superuser) passes the guard (PostgreSQL refuses: not a partition)
($ret, $out, $err) = $node->psql('postgres', q{COMMIT PREPARED 'hold';
    ALTER INDEX m.pt_idx ATTACH PARTITION state_hub_events.outbox_pkey});
like($err, qr/is not an index on any partition/, 'the superuser passes the guard');
my @msgs = wait_for_messages($nats, 1, 'ACTIVITY_EVENTS');
is(scalar @msgs, 1, 'the event was published');

$node->stop;
$nats->stop;
done_testing();
