
# 012_durable.pl
#    Durable delivery: committed events wait in the outbox while NATS is
#    down and across PostgreSQL crashes and restarts, and reach the stream in
#    order once it is back; PREPARE works and delivers at COMMIT PREPARED;
#    the backlog is visible and bounded.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('durable', $nats, preload => 1, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.publish_timeout = '1s'
state_hub_events.connect_timeout = '1s'
state_hub_events.retry_interval = '300ms'
max_prepared_transactions = 5
restart_after_crash = on
});

sub backlog { return $node->safe_psql('postgres', 'SELECT events FROM state_hub_events.backlog()'); }

# Wait until the stream holds $n messages on $subject (its state, polled),
# then read them once.
sub wait_for_subjects
{
    my ($n, $subject) = @_;
    return $nats->wait_for_messages($n, subject => $subject, timeout => 60);
}

# --- the worker runs and publishes what commits
$node->poll_query_until('postgres', 'SELECT worker_pid IS NOT NULL FROM state_hub_events.backlog()');
my $t0 = time;
$node->safe_psql('postgres', q{
    BEGIN;
    SELECT state_hub_events.publish('org.t.d.a', '{"i": 1}');
    SELECT state_hub_events.publish('org.t.d.a', '{"i": 2}');
    COMMIT;
});
my @m = wait_for_subjects(2, 'org.t.d.a');
is(scalar @m, 2, 'durable: committed events reach the stream');
check_envelope($m[0], subject => 'org.t.d.a', attributes => { i => 1 }, name => 'durable');
is($nats->stream_info->{duplicate_window_s}, 3600, 'the worker created the stream with the durable duplicate window');
$node->poll_query_until('postgres', 'SELECT events = 0 FROM state_hub_events.backlog()');
$node->safe_psql('postgres', q{BEGIN; SELECT state_hub_events.publish('org.t.d.rolledback'); ROLLBACK;});

# --- NATS down: commits are quick and silent, the backlog grows, then drains in order
$nats->stop;
my $c0 = time;
my ($ret, $out, $err) = $node->psql('postgres', q{
    SELECT count(state_hub_events.publish('org.t.d.down', jsonb_build_object('i', i))) FROM generate_series(1, 50) i;
});
is($err, '', 'durable: COMMIT while NATS is down says nothing (no network I/O in the backend)');
cmp_ok(time - $c0, '<', 1.0, 'and does not wait for NATS');
for my $i (51 .. 100)
{
    $node->safe_psql('postgres', "SELECT state_hub_events.publish('org.t.d.down', '{\"i\": $i}')");
}
is(backlog(), 100, 'backlog() shows the 100 waiting events');
$node->poll_query_until('postgres', q{SELECT last_error IS NOT NULL FROM state_hub_events.backlog()});
$nats->start;
@m = wait_for_subjects(100, 'org.t.d.down');
is(scalar @m, 100, 'after NATS came back, all 100 events arrived');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1 .. 100 ], 'in commit order');
$node->poll_query_until('postgres', 'SELECT events = 0 FROM state_hub_events.backlog()');
is($nats->count(undef, subject => 'org.t.d.rolledback'), 0, 'a rolled-back transaction left nothing');

# --- PREPARE TRANSACTION: delivered at COMMIT PREPARED, never at ROLLBACK PREPARED
$node->safe_psql('postgres', q{BEGIN; SELECT state_hub_events.publish('org.t.d.prepared.yes'); PREPARE TRANSACTION 'yes';});
$node->safe_psql('postgres', q{BEGIN; SELECT state_hub_events.publish('org.t.d.prepared.no'); PREPARE TRANSACTION 'no';});
is(backlog(), 0, 'prepared events are not in the backlog yet');
$node->safe_psql('postgres', q{ROLLBACK PREPARED 'no'; COMMIT PREPARED 'yes';});
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.d.after_prepared')});
@m = wait_for_subjects(1, 'org.t.d.after_prepared');
my @p = $nats->messages(undef, undef, subject => 'org.t.d.prepared.*');
is_deeply([ map { $_->{subject} } @p ], ['org.t.d.prepared.yes'], 'COMMIT PREPARED delivered; ROLLBACK PREPARED did not');

# --- PostgreSQL crashes with a backlog: nothing is lost
$nats->stop;
$node->safe_psql('postgres', q{
    SELECT count(state_hub_events.publish('org.t.d.crash', jsonb_build_object('i', i))) FROM generate_series(1, 30) i;
});
$node->stop('immediate');
$node->start;
is(backlog(), 30, 'after an immediate shutdown the backlog is still there');
my $wpid = $node->safe_psql('postgres', q{SELECT worker_pid FROM state_hub_events.backlog()});
$node->safe_psql('postgres', q{
    SELECT count(state_hub_events.publish('org.t.d.crash', jsonb_build_object('i', i))) FROM generate_series(31, 40) i;
});
kill 'KILL', $wpid if $wpid;
$node->poll_query_until('postgres', "SELECT worker_pid IS NOT NULL AND worker_pid <> $wpid FROM state_hub_events.backlog()")
  if $wpid;
$nats->start;
@m = wait_for_subjects(40, 'org.t.d.crash');
my %ids = map { $_->{msg_id} => 1 } @m;
is(scalar keys %ids, 40, 'after a crash and a kill -9 of the worker, every event arrived');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1 .. 40 ], 'in commit order');

# --- the backlog is bounded, with an explicit policy
$nats->stop;
$node->append_conf('postgresql.conf', "state_hub_events.max_backlog_events = 20\n");
$node->reload;
$node->safe_psql('postgres', q{
    SELECT count(state_hub_events.publish('org.t.d.full')) FROM generate_series(1, 20);
});
$node->poll_query_until('postgres', 'SELECT backlog_events >= 20 FROM state_hub_events.worker_status()');
($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.d.over')});
like($err, qr/cannot accept the event: the durable backlog holds 20 events/, "backlog_overflow = 'error' refuses at the call");
$node->append_conf('postgresql.conf', "state_hub_events.backlog_overflow = 'accept'\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('state_hub_events.backlog_overflow') = 'accept'});
($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.d.over') IS NOT NULL});
is($ret, 0, "backlog_overflow = 'accept' keeps the event");
like($err, qr/WARNING:.*durable backlog holds/, 'and warns');
$nats->start;
@m = (wait_for_subjects(20, 'org.t.d.full'), wait_for_subjects(1, 'org.t.d.over'));
is(scalar @m, 21, 'the accepted events arrive once NATS is back');

# --- a clean restart keeps the backlog; pg_dump does not dump it
$nats->stop;
$node->safe_psql('postgres', q{
    SELECT count(state_hub_events.publish('org.t.d.restart', jsonb_build_object('i', i))) FROM generate_series(1, 5) i;
});
my ($dump) = run_command([ 'pg_dump', '-d', $node->connstr('postgres') ]);
like($dump, qr/CREATE EXTENSION IF NOT EXISTS state_hub_events/, 'pg_dump dumps the extension');
unlike($dump, qr/COPY state_hub_events\.outbox/, 'but not the backlog');
$node->restart;
is(backlog(), 5, 'after a clean restart the backlog is still there');
$nats->start;
@m = wait_for_subjects(5, 'org.t.d.restart');
is(scalar @m, 5, 'and is delivered once NATS is back');

# --- durable publishing needs the worker's database
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION state_hub_events');
($ret, $out, $err) = $node->psql('other', q{SELECT state_hub_events.publish('org.t.d.other')});
like($err, qr/cannot publish durably from database "other"/, 'durable publish() in another database is a clear error');

$node->stop;
$nats->stop;
done_testing();
