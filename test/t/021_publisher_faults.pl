
# 021_publisher_faults.pl
#    Faults around the publisher's queue: a wait slot reused by the next
#    backend on the same PGPROC must not inherit the previous backend's
#    abandoned records (accounting == WARNINGs == the stream, exactly);
#    without a publisher process (max_worker_processes too low) every
#    commit's events are refused at once, counted, and WARNed about; the
#    postmaster dying while a committed transaction waits is no PANIC.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;

# ------------------------------------------------------------------
# 1. wait slot reuse
my $node = she_node('slot', $nats, conf => q{
state_hub_events.publish_timeout = '1s'
state_hub_events.connect_timeout = '1s'
state_hub_events.retry_interval = '0'
});
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.setup')});
wait_for_messages($nats, 1);

sub stats
{
    my ($n) = @_;
    my ($r) = $n->safe_psql('postgres', q{SELECT published, failed, unconfirmed FROM state_hub_events.stats()});
    return split /\|/, $r;
}

# wait (bounded) until $sql is true
sub poll_ok
{
    my ($n, $sql, $what) = @_;
    ok($n->poll_query_until('postgres', $sql), $what);
}

my @s0 = stats($node);

# X keeps the publisher busy: its batch waits for acks of a hung server
my $x = $node->background_psql('postgres', on_error_stop => 0);
my $xpid = $x->query_safe('SELECT pg_backend_pid()');
$x->query_safe(q{SET state_hub_events.publish_timeout = '30s'});
$nats->pause;
$x->{stdin} .= "SELECT state_hub_events.publish('org.t.x');\n";
$x->{run}->pump_nb;
# (the publisher has no database connection: pg_stat_activity cannot show it)
poll_ok($node, qq{SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $xpid},
    'X waits for the acks of its event');

# A: 3 events; the publisher does not take them in time; A gives up, exits
my ($ra, $oa, $ea) = $node->psql('postgres', q{BEGIN;
SELECT state_hub_events.publish('org.t.a', '{"i":1}');
SELECT state_hub_events.publish('org.t.a', '{"i":2}');
SELECT state_hub_events.publish('org.t.a', '{"i":3}');
COMMIT;});
my @a_ids = split /\n/, $oa;
is(scalar @a_ids, 3, 'A committed 3 events');
like($ea, qr/3 of 3 events of the committed transaction were not published/, 'A: WARNING, 3 lost');

# B: a new connection on the PGPROC A left (LIFO free list)
my $b = $node->background_psql('postgres', on_error_stop => 0);
my $bpid = $b->query_safe('SELECT pg_backend_pid()');
$b->query_safe(q{SET state_hub_events.publish_timeout = '30s'});
$b->{stdin} .= "SELECT state_hub_events.publish('org.t.b');\n";
$b->{run}->pump_nb;
poll_ok($node, qq{SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $bpid},
    'B waits for its outcome')
  or diag($node->safe_psql('postgres', qq{SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity WHERE pid = $bpid}) . " stderr: " . $b->{stderr});
$nats->resume;
my $bid = $b->query('SELECT 1');
my $berr = $b->{stderr};
$b->quit;
$x->query('SELECT 1');
my $xerr = $x->{stderr};
$x->quit;

my @s1 = stats($node);
my %in = map { $_->{msg_id} => 1 } wait_for_messages($nats, 3);
is(scalar(grep { $in{$_} } @a_ids), 0, "none of A's abandoned events reached the stream");
is($s1[1] - $s0[1], 3, 'stats() failed: exactly A\'s 3 events');
is($s1[0] - $s0[0], 2, 'stats() published: exactly X and B');
is($s1[2] - $s0[2], 0, 'nothing unconfirmed');
unlike($berr, qr/WARNING/, 'B: no WARNING (its own event was stored)');
unlike($xerr, qr/WARNING/, 'X: no WARNING');
is(scalar(grep { $_->{subject} eq 'org.t.b' } $nats->messages), 1, "B's event is in the stream once");
$node->stop;

# ------------------------------------------------------------------
# 2. no publisher process: max_worker_processes leaves it no slot
# (the extension registers two static workers: launcher, then publisher)
my $np = she_node('nopub', $nats, conf => q{
max_worker_processes = 1
state_hub_events.publish_timeout = '30s'
});
like(slurp_file($np->logfile), qr/cannot register the publisher process/,
    'the log says the publisher could not be registered');
is($np->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'state_hub_events publisher'}),
    '0', 'no publisher runs');
@s0 = stats($np);
my $t = time;
my ($r, $o, $e) = $np->psql('postgres', q{SELECT state_hub_events.publish('org.t.on')});
my $took_on = time - $t;
like($e, qr/1 of 1 events of the committed transaction were not published.*publisher process is not running/s,
    'wait_for_ack = on: WARNING, the publisher is not running');
cmp_ok($took_on, '<', 30, 'refused without waiting publish_timeout');
($r, $o, $e) = $np->psql('postgres', q{SET state_hub_events.wait_for_ack = off; SELECT state_hub_events.publish('org.t.off')});
like($e, qr/publisher process is not running/, 'wait_for_ack = off: WARNING too');
@s1 = stats($np);
is($s1[1] - $s0[1], 2, 'stats() failed counts both events');
is($s1[0] - $s0[0], 0, 'nothing published');
# more commits than the ring holds never stall: each is refused at once
my $sql = join('', map { "SELECT state_hub_events.publish('org.t.many', jsonb_build_object('pad', repeat('x', 1000)));\n" } 1 .. 50);
($r, $o, $e) = $np->psql('postgres', "SET state_hub_events.wait_for_ack = off;\n$sql");
my $w = () = $e =~ /publisher process is not running/g;
is($w, 50, '50 commits, 50 WARNINGs');
@s1 = stats($np);
is($s1[1] - $s0[1], 52, 'stats() failed counts all 52');
$np->stop;

# ------------------------------------------------------------------
# 4. commit order when writers wait for room: a queue of 256kB, events of
#    60kB, four sessions updating one row; admission is first come first
#    served, so the stream holds the events in commit order
my $oq = she_node('order', $nats, conf => q{
state_hub_events.queue_size = '256kB'
state_hub_events.publish_timeout = '30s'
});
$oq->safe_psql('postgres', q{CREATE TABLE counter (id int PRIMARY KEY, n int); INSERT INTO counter VALUES (1, 0)});
my $oscript = $oq->basedir . '/order.sql';
open my $ofh, '>', $oscript or die $!;
print $ofh q{BEGIN;
WITH u AS (UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n)
SELECT state_hub_events.publish('org.t.qorder', jsonb_build_object('n', n, 'pad', repeat('x', 60000))) FROM u;
COMMIT;
};
close $ofh;
$oq->command_ok([ 'pgbench', '-n', '-c', '4', '-j', '4', '-t', '50', '-f', $oscript, $oq->connstr('postgres') ],
    'four sessions update one row 200 times, 60kB events through a 256kB queue');
my @qo;
for (1 .. 300)
{
    @qo = grep { $_->{subject} eq 'org.t.qorder' } $nats->messages;
    last if @qo >= 200;
    usleep(100_000);
}
my @qn = map { $_->{body}{attributes}{n} } @qo;
is(scalar @qn, 200, 'all 200 events are in the stream');
is_deeply(\@qn, [ 1 .. 200 ], 'in the order their transactions committed');
$oq->stop;

# ------------------------------------------------------------------
# 3. the postmaster dies while a committed transaction waits for its acks:
#    the backend stops waiting and exits, never aborting the committed
#    transaction (that would be a PANIC)
my $pm = she_node('pmdeath', $nats, conf => q{
state_hub_events.publish_timeout = '60s'
});
$pm->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.pm.setup')});
my $w8 = $pm->background_psql('postgres', on_error_stop => 0);
my $wpid = $w8->query_safe('SELECT pg_backend_pid()');
$nats->pause;
# txid_current(): the transaction has an xid, so aborting it after its
# commit record would be the PANIC "cannot abort transaction"
$w8->{stdin} .= "SELECT txid_current(), state_hub_events.publish('org.t.pm');\n";
$w8->{run}->pump_nb;
ok($pm->poll_query_until('postgres', qq{SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $wpid}),
    'a committed transaction waits for its acks');
kill 'KILL', $pm->{_pid};
my $gone = 0;
for (1 .. 300)
{
    if (!kill(0, $wpid)) { $gone = 1; last; }
    usleep(100_000);
}
ok($gone, 'the waiting backend exits after the postmaster died (well before publish_timeout)');
unlike(slurp_file($pm->logfile), qr/PANIC|cannot abort transaction/,
    'no PANIC: the committed transaction was not aborted');
$nats->resume;
eval { $w8->quit };
$pm->{_pid} = undef;		# the postmaster is gone; nothing to stop

$nats->stop;
done_testing();
