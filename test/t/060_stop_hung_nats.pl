
# 060_stop_hung_nats.pl
#    A hung nats-server (SIGSTOP, connection open) does not hold off the
#    stop of the background processes for a whole publish deadline: the
#    durable worker leaves at once when terminated (what was not
#    acknowledged stays in the outbox and is published by the next worker),
#    and a fast shutdown waits for the publisher at most the configuration
#    file's publish_timeout, even when a session gave its batch a longer
#    one.  The same for a single event, which goes as one request rather
#    than as a batch: the worker and the publisher, terminated while its
#    request waits, leave within about a second (the worker) or the
#    configuration file's publish_timeout (the publisher).  A single event
#    whose request is not answered within its first second is sent again
#    and, once NATS answers, counted published once, not as a duplicate.

use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use NatsServer;
use SheTest;

my $long = 60;    # seconds: the deadline a fixed build no longer waits for

my $nats = NatsServer->new->start;

# --- the durable worker, terminated while it waits for acknowledgements
my $node = she_node('stophung', $nats, conf => qq{
state_hub_events.database = 'postgres'
state_hub_events.publish_timeout = '${long}s'
state_hub_events.retry_interval = '1s'
});
$node->safe_psql('postgres', q{
CREATE TABLE t (i int PRIMARY KEY);
CREATE TRIGGER t AFTER INSERT ON t FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.stop', 'i');
});
my $durable = 'SET state_hub_events.delivery = durable; ';
$node->safe_psql('postgres', $durable . 'INSERT INTO t VALUES (0)');
is($nats->wait_for_count(1, subject => 'org.t.stop', timeout => 60), 1,
    'the worker publishes (its connection is open)');

$nats->pause;
$node->safe_psql('postgres', $durable . 'INSERT INTO t SELECT g FROM generate_series(1, 200) g');
my $wpid;
ok( wait_until(
        'the worker read the 200 events', 60,
        sub {
            $wpid = $node->safe_psql('postgres', q{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'state_hub_events worker' AND query = 'reading the outbox'});
            return $wpid ne '';
        }),
    'the worker took the batch to publish it');

my $t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($wpid)");
ok(wait_until('the worker exited', 2 * $long, sub { !kill(0, $wpid) }), 'the terminated worker exits');
my $secs = time - $t0;
cmp_ok($secs, '<', $long / 3, "the worker left within a fraction of publish_timeout (${secs}s)");

$nats->resume;
is($nats->wait_for_count(201, subject => 'org.t.stop', timeout => 120), 201,
    'the next worker publishes what the terminated one left in the outbox');
ok( wait_until(
        'the outbox is empty', 60,
        sub { $node->safe_psql('postgres', 'SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the outbox is empty');
is($nats->count(undef, subject => 'org.t.stop'), 201, 'each event once (the duplicate window drops copies)');

# --- the durable worker, terminated while a single event's request waits
# (one event goes as one request, not as a batch)
$nats->pause;
$node->safe_psql('postgres', $durable . 'INSERT INTO t VALUES (1000)');
ok( wait_until(
        'the worker read the event', 60,
        sub {
            $node->safe_psql('postgres', 'SELECT backlog_events FROM state_hub_events.worker_status()') eq '1';
        }),
    'the worker took the single event to publish it');
$wpid = $node->safe_psql('postgres', 'SELECT worker_pid FROM state_hub_events.worker_status()');
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($wpid)");
ok(wait_until('the worker exited', 2 * $long, sub { !kill(0, $wpid) }), 'the terminated worker exits');
$secs = time - $t0;
cmp_ok($secs, '<', $long / 6, "the worker left its single event's request within a fraction of publish_timeout (${secs}s)");
$nats->resume;
is($nats->wait_for_count(202, subject => 'org.t.stop', timeout => 120), 202,
    'the next worker publishes the single event');
ok( wait_until(
        'the outbox is empty', 60,
        sub { $node->safe_psql('postgres', 'SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the outbox is empty again');
is($nats->count(undef, subject => 'org.t.stop'), 202, 'each event once');

# --- the publisher, at a fast shutdown, with a session's longer deadline
$node->safe_psql('postgres', q{
ALTER SYSTEM SET state_hub_events.publish_timeout = '2s';
ALTER SYSTEM RESET state_hub_events.database;
SELECT pg_reload_conf();
});
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.stop.imm')});
is($nats->wait_for_count(1, subject => 'org.t.stop.imm', timeout => 60), 1,
    'the publisher publishes (its connection is open)');

# --- the publisher, sent SIGTERM while a single event's request waits for
# its session's longer deadline: it stops within about the configuration
# file's publish_timeout of the SIGTERM, the event counted unconfirmed once
sub counters
{
    return $node->safe_psql('postgres',
        q{SELECT concat_ws('|', published, failed, unconfirmed) FROM state_hub_events.stats()});
}
# --- a single event whose request gets no answer for over a second (the
# publisher then sends the same message again and waits on): once NATS
# answers, it is published once and counted once, not as a duplicate
sub counters_dup
{
    return $node->safe_psql('postgres',
        q{SELECT concat_ws('|', published, duplicates, failed, unconfirmed) FROM state_hub_events.stats()});
}
my @d0 = split /\|/, counters_dup();
$nats->pause;
my ($out2, $err2) = ('', '');
my $h2 = IPC::Run::start(
    [
        'psql', '-X', '-d', $node->connstr('postgres'),
        '-c', 'SET application_name = slowack',
        '-c', "SET state_hub_events.publish_timeout = '${long}s'",
        '-c', q{SELECT state_hub_events.publish('org.t.stop.slow') IS NOT NULL}
    ],
    '>', \$out2, '2>', \$err2);
ok( wait_until(
        'the session waited over 1.5 s', 60,
        sub {
            $node->safe_psql('postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE application_name = 'slowack' AND state = 'active' AND wait_event = 'Extension'
   AND now() - query_start > interval '1.5 s'}) eq '1';
        }),
    'the session waits for its event past the request\'s first second');
$nats->resume;
ok( wait_until(
        'the session returned', 60,
        sub {
            $node->safe_psql('postgres',
                q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'slowack'}) eq '0';
        }),
    'the session returned once NATS answered');
$h2->finish;
unlike($err2, qr/WARNING/, 'without a WARNING');
my @d1 = split /\|/, counters_dup();
is(join('|', map { $d1[$_] - $d0[$_] } 0 .. 3), '1|0|0|0', 'stats(): published once, not a duplicate');
is($nats->count(undef, subject => 'org.t.stop.slow'), 1, 'the event is in the stream once');

my @c0 = split /\|/, counters();
my $ppid = $node->safe_psql('postgres', q{SELECT state_hub_events.ping()->>'publisher_pid'});
like($ppid, qr/^\d+$/, 'the publisher runs');
$nats->pause;
my ($out1, $err1) = ('', '');
my $h1 = IPC::Run::start(
    [
        'psql', '-X', '-d', $node->connstr('postgres'),
        '-c', 'SET application_name = stophung1',
        '-c', "SET state_hub_events.publish_timeout = '${long}s'",
        '-c', q{SELECT state_hub_events.publish('org.t.stop.one') IS NOT NULL}
    ],
    '>', \$out1, '2>', \$err1);
ok( wait_until(
        'the session waits for its acknowledgement', 60,
        sub {
            $node->safe_psql('postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE application_name = 'stophung1' AND state = 'active' AND wait_event = 'Extension'}) eq '1';
        }),
    'the committing session waits for the publisher');
$t0 = time;
# (pg_terminate_backend() does not reach it: it has no database connection)
kill 'TERM', $ppid;
ok( wait_until(
        'the session got its outcome', 2 * $long,
        sub {
            $node->safe_psql('postgres',
                q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stophung1'}) eq '0';
        }),
    'the session returned');
$secs = time - $t0;
cmp_ok($secs, '<', $long / 6,
    "the publisher gave up the single event's request about publish_timeout after the SIGTERM, not the session's ${long}s (${secs}s)");
ok(wait_until('the publisher exited', 60, sub { !kill(0, $ppid) }), 'the terminated publisher exits');
$h1->finish;
like($err1, qr/WARNING:  state_hub_events: 1 of 1 events were sent but not confirmed/,
    'the session was told its event is unconfirmed');
my @c1 = split /\|/, counters();
is($c1[1] - $c0[1], 0, 'stats(): not counted failed');
is($c1[2] - $c0[2], 1, 'stats(): counted unconfirmed once');
$nats->resume;
ok( wait_until(
        'the next publisher publishes', 60,
        sub {
            $node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.stop.again')});
            $nats->count(undef, subject => 'org.t.stop.again') > 0;
        }),
    'the next publisher publishes');
cmp_ok($nats->count(undef, subject => 'org.t.stop.one'), '<=', 1, 'the single event at most once in the stream');

$nats->pause;
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
    [
        'psql', '-X', '-d', $node->connstr('postgres'),
        '-c', 'SET application_name = stophung',
        '-c', "SET state_hub_events.publish_timeout = '${long}s'",
        '-c', q{SELECT count(state_hub_events.publish('org.t.stop.imm', jsonb_build_object('k', g)))
                  FROM generate_series(1, 5) g}
    ],
    '>', \$out, '2>', \$err);
ok( wait_until(
        'the session waits for its acknowledgements', 60,
        sub {
            $node->safe_psql('postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE application_name = 'stophung' AND state = 'active' AND wait_event = 'Extension'}) eq '1';
        }),
    'the committing session waits for the publisher');

$t0 = time;
$node->stop('fast');
$secs = time - $t0;
cmp_ok($secs, '<', $long / 3,
    "a fast shutdown waited about publish_timeout for the publisher, not the session's ${long}s (${secs}s)");
$h->finish;
$nats->resume;

done_testing();
