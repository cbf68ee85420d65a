
# 038_worker_wakeups.pl
#    While the durable worker waits to retry (NATS unreachable), commits do
#    not wake it: it reads the outbox again before it waits for a wake-up,
#    so a wake-up per commit would only cost the committing backend a
#    signal and the worker a pass through its loop.  Counted with the
#    worker's voluntary context switches (Linux /proc); the events still
#    arrive, in commit order, once NATS is back.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $commits = 300;

my $nats = NatsServer->new->start;
my $node = she_node('wakeups', $nats, preload => 1, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.publish_timeout = '1s'
state_hub_events.connect_timeout = '1s'
state_hub_events.retry_interval = '1h'
});
$node->safe_psql('postgres', q{
CREATE TABLE w (i int PRIMARY KEY);
CREATE TRIGGER w AFTER INSERT ON w FOR EACH ROW EXECUTE FUNCTION state_hub_events.emit('org.t.wake', 'i');
INSERT INTO w VALUES (0);
});
is($nats->wait_for_count(1, subject => 'org.t.wake', timeout => 60), 1, 'the worker publishes');

my $wpid = $node->safe_psql('postgres', 'SELECT worker_pid FROM state_hub_events.worker_status()');

# voluntary context switches of the worker's main thread
sub switches
{
    my $status = slurp_file("/proc/$wpid/status");
    return $status =~ /^voluntary_ctxt_switches:\s*(\d+)/m ? $1 : die "no voluntary_ctxt_switches in /proc/$wpid/status";
}

SKIP:
{
    skip 'no /proc', 2 unless -r "/proc/$wpid/status";

    # NATS goes away; the next batch fails and the worker waits retry_interval
    $nats->stop;
    $node->safe_psql('postgres', 'INSERT INTO w VALUES (1)');
    $node->poll_query_until('postgres', 'SELECT last_error IS NOT NULL FROM state_hub_events.worker_status()')
      or die 'the worker never reported the failure';

    my $before = switches();
    $node->safe_psql('postgres', join('', map { "INSERT INTO w VALUES ($_);\n" } 2 .. $commits + 1));
    my $woken = switches() - $before;
    cmp_ok($woken, '<', $commits / 3,
        "$commits commits during a retry wait woke the worker $woken times (one wake-up per commit before)");

    $nats->start;
    $node->append_conf('postgresql.conf', "state_hub_events.retry_interval = '100ms'\n");
    $node->reload;
    $nats->wait_for_count($commits + 2, subject => 'org.t.wake', timeout => 60);
    my @m = $nats->messages('ACTIVITY_EVENTS', undef, subject => 'org.t.wake', timeout => 60);
    is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 0 .. $commits + 1 ],
        'every event arrived once NATS was back, in commit order');
}

$node->stop;
$nats->stop;
done_testing();
