
# 042_gather_wakeups.pl
#    A take that a session waits for (wait_for_ack = on) is held while other
#    commits are between pre-commit and hand-over, within batch_linger.  The
#    publisher is woken once, by the hand-over that ends the last of those
#    commits, not by each of them (each wake-up is a signal from a session
#    and a context switch of the publisher: CPU at 32 clients).
#    Sequence: twelve sessions commit (a row and an event each) while
#    synchronous_standby_names names a standby that does not exist
#    (max_wal_senders > 0: streaming), so each has drawn its order ticket
#    and waits in the proc array (it holds nobody back); A commits with
#    synchronous_commit = local and waits for its acknowledgement: the
#    publisher takes A and gathers.  Then the standby requirement goes, and
#    the twelve hand over one by one, test_commit_delay_ms spacing them
#    8 ms apart (all within the linger, 1 s, with room for a loaded
#    machine: from A's COMMIT to the release the test starts no process,
#    its queries go through a session opened beforehand).  Counted: the
#    publisher's voluntary context switches (its main thread) over that
#    time -- the gathering's one wake-up, the publishing's own few, the
#    reload's: 4 here -- against at least twelve when every hand-over
#    wakes it (15-16 before).  And all thirteen events go in one write.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('gather_wakeups', $nats, streaming => 1, conf => q{
max_connections = 30
state_hub_events.batch_linger = '1000ms'
state_hub_events.publish_timeout = '30s'
});
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.warmup')});
wait_for_messages($nats, 1, 'ACTIVITY_EVENTS');
$node->safe_psql('postgres', q{CREATE TABLE t (i int)});

# wait_until with 10 ms between looks (the linger's second is short)
sub soon
{
    my ($what, $code) = @_;
    my $deadline = time + 30;
    until ($code->())
    {
        if (time >= $deadline)
        {
            diag("timed out after 30 s waiting for $what");
            return 0;
        }
        select(undef, undef, undef, 0.01);
    }
    return 1;
}

my $pid = $node->safe_psql('postgres', q{SELECT state_hub_events.ping()->>'publisher_pid'});
ok($pid =~ /^\d+$/, "the publisher's pid ($pid)");

# voluntary context switches of the publisher's main thread
sub switches
{
    open(my $fh, '<', "/proc/$pid/task/$pid/status") or die "cannot read /proc/$pid: $!";
    while (my $line = <$fh>)
    {
        return $1 if $line =~ /^voluntary_ctxt_switches:\s+(\d+)/;
    }
    die "no voluntary_ctxt_switches in /proc/$pid/task/$pid/status";
}

$node->safe_psql('postgres', q{ALTER SYSTEM SET synchronous_standby_names = 'nobody'});
$node->reload;
ok(wait_until('synchronous_standby_names', 30, sub {
    $node->safe_psql('postgres', 'SHOW synchronous_standby_names') eq 'nobody' }),
    'commits wait for a standby that does not exist');

my @held;
for my $i (1 .. 12)
{
    my $s = $node->background_psql('postgres');
    my $delay = 8 * $i;
    $s->query_safe("SET state_hub_events.test_commit_delay_ms = $delay");
    # a row, so that the commit writes a record and waits for the standby
    $s->{stdin} .= "BEGIN; INSERT INTO t VALUES ($i); SELECT state_hub_events.publish('org.t.held', '{\"i\": $i}'); COMMIT;\n";
    $s->{run}->pump_nb;
    push @held, $s;
}
ok($node->poll_query_until('postgres',
    q{SELECT count(*) = 12 FROM pg_stat_activity WHERE wait_event = 'SyncRep'}),
    'twelve commits drew their tickets and wait in the proc array');

my $stats0 = $node->safe_psql('postgres',
    q{SELECT publisher_batches || ' ' || publisher_events FROM state_hub_events.stats()});

# From A's COMMIT on, the publisher's linger (1 s) runs: the test's own
# queries go through this session, opened now, so that none of them waits
# for a psql or pg_ctl to start on a loaded machine.
my $admin = $node->background_psql('postgres');
$admin->query_safe(q{SET synchronous_commit = local});

my $a = $node->background_psql('postgres');
$a->query_safe(q{SET synchronous_commit = local});
$a->{stdin} .= "SELECT state_hub_events.publish('org.t.a');\nSELECT 'a done';\n";
$a->{run}->pump_nb;
my $t_a = time;
ok(soon('A waits', sub {
    $admin->query_safe(q{SELECT count(*) FROM pg_stat_activity
                         WHERE wait_event = 'Extension' AND query ~ 'org.t.a'}) eq '1' }),
    'A waits for its acknowledgement');
# the publisher took A and gathers (it sleeps: its switches stop moving)
my $before;
ok(soon('the publisher sleeps', sub {
    $before = switches();
    select(undef, undef, undef, 0.02);
    switches() == $before }),
    'the publisher took A and sleeps');

$admin->query_safe(q{ALTER SYSTEM RESET synchronous_standby_names});
$admin->query_safe(q{SELECT pg_reload_conf()});
note(sprintf("the twelve were released %.0f ms after A's COMMIT was sent (batch_linger: 1000 ms)",
    (time - $t_a) * 1000));
like($a->query_safe(q{SELECT 'sync'}), qr/a done/, "A's COMMIT returned");
$_->query_safe(q{SELECT 'sync'}) for @held;
my $after = switches();
my $woken = $after - $before;
note("the publisher's main thread switched $woken times while twelve commits handed over");
cmp_ok($woken, '<', 11,
    "the publisher is not woken by each hand-over of the commits it gathers ($woken switches for 12 hand-overs)");

my ($b0, $e0) = split / /, $stats0;
my ($b1, $e1) = split / /, $node->safe_psql('postgres',
    q{SELECT publisher_batches || ' ' || publisher_events FROM state_hub_events.stats()});
is($e1 - $e0, 13, 'thirteen events published');
is($b1 - $b0, 1, 'in one write');
is($nats->wait_for_count(12, subject => 'org.t.held'), 12, 'the stream holds the twelve held events');
is($nats->wait_for_count(1, subject => 'org.t.a'), 1, "and A's");

$a->quit;
$admin->quit;
$_->quit for @held;
$node->stop;
$nats->stop;
done_testing();
