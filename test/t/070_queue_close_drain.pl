
# 070_queue_close_drain.pl
#    The publisher's exit drain closes the queue.  A commit whose batch is
#    bigger than the queue streams it in while the publisher takes; when
#    the publisher is told to stop (SIGTERM), the queue is closed: that
#    commit appends nothing more, counts the rest of its batch lost (its
#    WARNING says so, and stats() failed), and the exiting publisher
#    publishes exactly what the queue held.  Nothing of the batch lands
#    behind the drain's last take (the restarted publisher publishes none
#    of it), so the drain's count plus the commit's lost count is the
#    batch.  Without the close the commit keeps appending behind the drain
#    and no WARNING counts anything.  The batch that waited for room is
#    counted in stats() order_lapses_room.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('queue_close', $nats, conf => q{
state_hub_events.queue_size = '256kB'
state_hub_events.publish_timeout = '5s'
state_hub_events.retry_interval = '0'
});

my ($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.first') IS NOT NULL});
is($err, '', 'the first event is published (the stream exists)');

sub stats
{
    my ($p, $f, $u, $room) = split /\|/, $node->safe_psql('postgres',
        q{SELECT published, failed, unconfirmed, order_lapses_room FROM state_hub_events.stats()});
    return { published => $p, failed => $f, unconfirmed => $u, room => $room };
}
my $s0 = stats();

my $ppid = $node->safe_psql('postgres', q{SELECT state_hub_events.ping()->>'publisher_pid'});

# The publisher busy with one event while NATS hangs (the session waits 60 s).
$nats->pause;
my $holder = $node->background_psql('postgres', on_error_stop => 0);
$holder->query_safe(q{SET state_hub_events.publish_timeout = '60s'});
$holder->{stdin} .= "SELECT state_hub_events.publish('org.t.held');\n";
$holder->{run}->pump_nb;
ok($node->poll_query_until('postgres',
    q{SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query ~ 'org.t.held'}),
    'the publisher is busy with the event of a commit while NATS hangs');

# A commit of 1,000 events of about 1 kB each (4 times the queue), nobody
# waiting for their outcomes: it fills the queue and waits for room.
my $w = IPC::Run::start([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
    '-c', q{SET state_hub_events.wait_for_ack = off},
    '-c', q{SET state_hub_events.publish_timeout = '60s'},
    '-c', q{SELECT count(state_hub_events.publish('org.t.room', jsonb_build_object('i', i, 'pad', repeat('x', 1000)))) FROM generate_series(1, 1000) i} ],
    '>', \my $wout, '2>', \my $werr);
ok($node->poll_query_until('postgres',
    q{SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query ~ 'org.t.room'}),
    'the commit of 1,000 events waits for room in the queue');
is(stats()->{room} - $s0->{room}, 1, 'stats(): order_lapses_room counts the batch that waits for room');

# The publisher is told to stop: once its event is answered it drains.
my $off = -s $node->logfile;
kill 'TERM', $ppid;
$nats->resume;
$w->finish;
$holder->quit;
my ($lost) = $werr =~ /WARNING:  state_hub_events: (\d+) of 1000 events of the committed transaction were not published/;
ok(defined $lost && $lost > 0, 'the commit counts the events the closed queue did not take (WARNING)')
  or diag($werr);
like($werr, qr/DETAIL:  the publisher process stopped before \d+ events were queued/,
    'and says the publisher stopped');
ok($node->wait_for_log(qr/reported the outcome of \d+ queued events before exiting/, $off),
    'the exiting publisher drained the queue');
my ($drained) = slurp_file($node->logfile, $off) =~ /reported the outcome of (\d+) queued events before exiting/;
cmp_ok($drained + ($lost // 0), '<=', 1000, 'the drain reported at most what the commit queued');

# The restarted publisher serves; it found none of the batch in the queue.
ok(wait_until('a new publisher process', 60, sub {
    my $p = $node->safe_psql('postgres', q{SELECT state_hub_events.ping()->>'publisher_pid'});
    return $p ne '' && $p ne $ppid;
}), 'a new publisher process runs');
my $fence_lost = 0;
ok(wait_until('a commit published by the new publisher', 60, sub {
    my ($r, $o, $e) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.fence')});
    $fence_lost += $1 while $e =~ /(\d+) of 1 events of the committed transaction were not published/g;
    return $r == 0 && $e eq '';
}), 'a later commit is published');
is($nats->count(undef, subject => 'org.t.room'), 1000 - ($lost // 0),
    'the stream holds every event of the batch not counted lost');
my $s1 = stats();
my $fences = $nats->count(undef, subject => 'org.t.fence');
is($s1->{published} - $s0->{published}, 1000 - ($lost // 0) + 1 + $fences,
    'stats(): published counts the drained events, the held one and the later commit');
is($s1->{failed} - $s0->{failed}, ($lost // 0) + $fence_lost,
    'stats(): failed counts the lost events (and any commit refused before the new publisher ran)');
is($s1->{unconfirmed} - $s0->{unconfirmed}, 0, 'stats(): nothing unconfirmed');

$node->stop;
$nats->stop;
done_testing();
