
# 037_queue_scan_drain.pl
#    The publisher's queue under a backlog and at shutdown: a take reads
#    the headers of about what it returns, not the whole backlog behind it;
#    a lapse of the commit order (a transaction visible but not handed over
#    for more than 200 ms) is LOGged and counted in stats()
#    (order_lapses_held); the drain at shutdown publishes the
#    events queued behind a batch whose backend gave up (wait_for_ack =
#    off: nobody else would count them), and counts a commit's events the
#    closed queue refused.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('queue_scan', $nats, conf => q{
state_hub_events.queue_size = '32MB'
state_hub_events.publish_timeout = '5s'
state_hub_events.retry_interval = '0'
});

my ($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.first') IS NOT NULL});
is($err, '', 'the first event is published (the stream exists)');

# Reload and wait until the publisher applied it (it logs its connection
# state after every reload).
sub reload_publisher
{
    my ($sql) = @_;
    my $off = -s $node->logfile;
    $node->safe_psql('postgres', $sql);
    $node->reload;
    $node->wait_for_log(qr/publisher: connected to NATS at/, $off);
}

# A session whose one event keeps the publisher busy while NATS hangs.
sub hold_publisher
{
    my ($tag) = @_;
    my $h = $node->background_psql('postgres', on_error_stop => 0);
    $h->query_safe(q{SET state_hub_events.publish_timeout = '60s'});
    $h->{stdin} .= "SELECT state_hub_events.publish('org.t.$tag');\n";
    $h->{run}->pump_nb;
    ok($node->poll_query_until('postgres',
        qq{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query ~ 'org.t.$tag'}),
        "the publisher is busy with the event of a commit ($tag) while NATS hangs");
    return $h;
}

# --- a backlog of 20,000 events: each take reads about what it takes
reload_publisher(q{ALTER SYSTEM SET log_min_messages = debug2});
$nats->pause;
my $holder = hold_publisher('held1');
($ret, $out, $err) = $node->psql('postgres', q{
    SET state_hub_events.wait_for_ack = off;
    BEGIN;
    SELECT count(state_hub_events.publish('org.t.backlog', jsonb_build_object('i', i))) FROM generate_series(1, 20000) i;
    COMMIT;
});
is($err, '', '20,000 events queued behind the busy publisher');
my $off = -s $node->logfile;
$nats->resume;
is($nats->wait_for_count(20000, subject => 'org.t.backlog'), 20000, 'all 20,000 are published once NATS answers');
$holder->quit;
my ($takes, $worst, $biggest) = (0, 0, 0);
for (split /\n/, slurp_file($node->logfile, $off))
{
    next unless /taking (\d+) records, read (\d+) record headers/;
    $takes++;
    $biggest = $1 if $1 > $biggest;
    $worst = $2 - $1 if $2 - $1 > $worst;
}
cmp_ok($takes, '>=', 2, "the backlog was taken in parts ($takes takes)");
is($biggest, 10000, 'a take was as big as the take limit (10,000 events)');
cmp_ok($worst, '<=', 1000,
    "no take read more than 1,000 headers beyond what it took (at most $worst; 20,000 queued)");
reload_publisher(q{ALTER SYSTEM RESET log_min_messages});

# --- a transaction visible but not handed over for more than 200 ms: the
# publisher lets a later one go first, and says so (LOG)
$node->safe_psql('postgres', q{CREATE TABLE win (id int PRIMARY KEY, v int); INSERT INTO win VALUES (1, 0)});
my $lapses_sql = q{SELECT order_lapses_held, order_lapses_room, order_lapses_wide FROM state_hub_events.stats()};
my @l0 = split /\|/, $node->safe_psql('postgres', $lapses_sql);
$off = -s $node->logfile;
my $b = $node->background_psql('postgres');
$b->query_until(qr/spinning/, q{\echo spinning
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 s';
BEGIN
    WHILE (SELECT v FROM win WHERE id = 1) < 1 AND clock_timestamp() < deadline LOOP
    END LOOP;
    UPDATE win SET v = v + 1 WHERE id = 1;
    PERFORM state_hub_events.publish('org.t.late', '{"who": "B"}');
END
$$;
});
$node->safe_psql('postgres', q{SET state_hub_events.test_commit_delay_ms = 1000;
WITH u AS (UPDATE win SET v = v + 1 WHERE id = 1 RETURNING v)
SELECT state_hub_events.publish('org.t.late', '{"who": "A"}') FROM u;});
$b->query_safe('SELECT 1');
$b->quit;
is($nats->wait_for_count(2, subject => 'org.t.late'), 2, 'both events are published');
ok($node->wait_for_log(qr/LOG:  state_hub_events publisher: the commit order of 1 batches was not guaranteed/, $off),
    'the lapse of the commit order is LOGged');
like(slurp_file($node->logfile, $off), qr/DETAIL:  Held back for a committed transaction not handed over within 200 ms: 1;/,
    'and says why');
my @l1 = split /\|/, $node->safe_psql('postgres', $lapses_sql);
is_deeply([ map { $l1[$_] - $l0[$_] } 0 .. 2 ], [ 1, 0, 0 ],
    'stats(): order_lapses_held counts it (and nothing else lapsed)');

# --- the publisher alone terminated (SIGTERM) while sessions commit with
# wait_for_ack = off: it is restarted, and every committed event is either
# in the stream or counted in stats() (the counters survive the restart)
sub stats
{
    return split /\|/, $node->safe_psql('postgres',
        q{SELECT published, failed, unconfirmed FROM state_hub_events.stats()});
}
$node->safe_psql('postgres', q{CREATE TABLE done (id bigserial PRIMARY KEY)});
my $script = $node->basedir . '/term.sql';
open my $fh, '>', $script or die $!;
print $fh "SET state_hub_events.wait_for_ack = off;\n"
  . "BEGIN;\nINSERT INTO done DEFAULT VALUES;\nSELECT state_hub_events.publish('org.t.term');\nCOMMIT;\n";
close $fh;
my @s0 = stats();
my $ppid = $node->safe_psql('postgres', q{SELECT state_hub_events.ping()->>'publisher_pid'});
my $bench = IPC::Run::start([ 'pgbench', '-n', '-c', '4', '-j', '4', '-t', '1500', '-f', $script, $node->connstr('postgres') ],
    '>', \my $bout, '2>', \my $berr);
ok($node->poll_query_until('postgres', q{SELECT count(*) >= 500 FROM done}), 'sessions commit');
kill 'TERM', $ppid;
$bench->finish;
my $rows = $node->safe_psql('postgres', q{SELECT count(*) FROM done});
is($rows, 6000, 'every pgbench transaction committed');
my @s1;
ok(wait_until('every committed event published or counted', 60, sub {
    @s1 = stats();
    return $s1[0] - $s0[0] + $s1[1] - $s0[1] + $s1[2] - $s0[2] >= $rows;
}), 'the restarted publisher serves');
# ping() raises an ERROR while the new publisher is still connecting
my $npid = '';
wait_until('ping() answers', 60, sub {
    my ($r, $o, $e) = $node->psql('postgres', q{SELECT state_hub_events.ping()->>'publisher_pid'});
    $npid = $o if $r == 0;
    return $r == 0;
});
isnt($npid, $ppid, 'a new publisher process');
is($s1[0] - $s0[0] + $s1[1] - $s0[1] + $s1[2] - $s0[2], $rows,
    'stats(): published + failed + unconfirmed == the events committed');
is($nats->count(undef, subject => 'org.t.term'), $s1[0] - $s0[0],
    'the stream holds exactly the events counted published');
cmp_ok($s1[1] - $s0[1], '>', 0, 'some were refused while no publisher ran (and counted)');

# --- the drain at shutdown: 10,000 events whose backend gave up fill the
# drain's first take (nothing of it is published); the five events queued
# behind them with wait_for_ack = off are published all the same
$nats->pause;
$holder = hold_publisher('held2');
($ret, $out, $err) = $node->psql('postgres', q{
    SET state_hub_events.publish_timeout = '1s';
    SELECT count(state_hub_events.publish('org.t.gaveup', jsonb_build_object('i', i))) FROM generate_series(1, 10000) i;
});
like($err, qr/10000 of 10000 events of the committed transaction were not published/,
    'a commit of 10,000 events gives up waiting (all counted lost)');
($ret, $out, $err) = $node->psql('postgres', q{
    SET state_hub_events.wait_for_ack = off;
    SELECT state_hub_events.publish('org.t.behind.' || i) FROM generate_series(1, 5) i;
});
is($err, '', 'five events queued behind them without waiting');
$off = -s $node->logfile;
my $stop = IPC::Run::start([ 'pg_ctl', '-D', $node->data_dir, '-m', 'fast', '-w', 'stop' ],
    '>', \my $sout, '2>', \my $serr);
$node->wait_for_log(qr/received fast shutdown request/, $off);
$nats->resume;
$stop->finish;
$holder->{run}->kill_kill;
$node->_update_pid(0);
is($nats->wait_for_count(5, subject => 'org.t.behind.*', timeout => 10), 5,
    'the five events behind the given-up batch were published before the publisher exited');
is($nats->count(undef, subject => 'org.t.gaveup'), 0, 'none of the given-up batch was');
like(slurp_file($node->logfile, $off), qr/reported the outcome of 5 queued events before exiting/,
    'the publisher reported the outcome of those five');

$nats->stop;
done_testing();
