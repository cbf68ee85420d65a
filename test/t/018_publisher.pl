
# 018_publisher.pl
#    The one publisher process: exact accounting (stats() == the WARNINGs ==
#    what the stream holds) with a stopped and a hung server, ping()
#    cancellable against a hung server, the publisher killed with kill -9
#    while sessions commit, and commit order of transactions that touched
#    the same rows.

use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('publisher', $nats, conf => q{
state_hub_events.publish_timeout = '1s'
state_hub_events.retry_interval = '0'
restart_after_crash = on
});

sub stats
{
    my ($r) = $node->safe_psql('postgres', q{SELECT published, failed, unconfirmed FROM state_hub_events.stats()});
    return split /\|/, $r;
}

# Commit $n one-event transactions in one session; returns the ids and the
# events the WARNINGs counted lost and unconfirmed.
sub commit_many
{
    my ($n, $tag) = @_;
    my $sql = join('', map { "SELECT state_hub_events.publish('org.t.acct.$tag', '{\"i\": $_}');\n" } 1 .. $n);
    my ($ret, $out, $err) = $node->psql('postgres', $sql);
    my ($lost, $unconf) = (0, 0);
    $lost += $1 while $err =~ /(\d+) of \d+ events of the committed transaction were not published/g;
    $unconf += $1 while $err =~ /(\d+) of \d+ events were sent but not confirmed/g;
    return ([ split /\n/, $out ], $lost, $unconf);
}

$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.setup')});
wait_for_messages($nats, 1);

# --- stopped server: every event lost, exactly counted
my @s0 = stats();
$nats->stop;
my ($ids, $lost, $unconf) = commit_many(20, 'down');
my @s1 = stats();
is($lost + $unconf, 20, 'server stopped: every one of 20 events is in a WARNING');
is($s1[1] - $s0[1], $lost, 'stats() failed == the events the WARNINGs call lost');
is($s1[2] - $s0[2], $unconf, 'stats() unconfirmed == the events the WARNINGs call unconfirmed');
is($s1[0] - $s0[0], 0, 'nothing counted published');
$nats->start;
my $back = 0;
for (1 .. 100)
{
    my ($r, $o, $e) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.back')});
    if ($e eq '') { $back = 1; last; }
    usleep(100_000);
}
ok($back, 'publishing resumes when the server is back');
my %in_stream = map { $_->{msg_id} => 1 } $nats->messages;
my @lost_ids = grep { $in_stream{$_} } @$ids;
cmp_ok(scalar @lost_ids, '<=', $unconf, 'of those events, at most the unconfirmed ones reached the stream');

# --- hung server: unconfirmed, counted once; the stream holds no more
@s0 = stats();
my $before = $nats->last_seq;
$nats->pause;
($ids, $lost, $unconf) = commit_many(10, 'hung');
@s1 = stats();
is($lost + $unconf, 10, 'server hung: every one of 10 events is in a WARNING');
is($s1[1] - $s0[1], $lost, 'stats() failed == WARNING lost');
is($s1[2] - $s0[2], $unconf, 'stats() unconfirmed == WARNING unconfirmed');
$nats->resume;
my @after = wait_for_messages($nats, 1);
%in_stream = map { $_->{msg_id} => 1 } $nats->messages;
cmp_ok(scalar(grep { $in_stream{$_} } @$ids), '<=', $unconf,
    'after the server resumes, the stream holds at most the unconfirmed events');

# --- ping() against a hung server is cancellable
$node->safe_psql('postgres', q{ALTER SYSTEM SET state_hub_events.publish_timeout = '8s'; SELECT pg_reload_conf()});
# the publisher may still be reconnecting after the hang
ok($node->poll_query_until('postgres', q{SELECT state_hub_events.ping() IS NOT NULL}),
    'the publisher is connected again');
$nats->pause;
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->{stdin} .= "SELECT state_hub_events.ping();\n";
$bg->{run}->pump_nb;
$node->poll_query_until('postgres',
    "SELECT state = 'active' AND query ~ 'ping' FROM pg_stat_activity WHERE pid = $pid");
usleep(300_000);
my $t0 = time;
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->{run}->pump_nb until $bg->{stderr} =~ /canceling statement/ || time - $t0 > 5;
my $took = time - $t0;
like($bg->{stderr}, qr/canceling statement due to user request/, 'ping() against a hung server is cancelled');
cmp_ok($took, '<', 1.5, "within a second or so (took ${took}s)");
$bg->{stderr} = '';
is($bg->query_safe('SELECT 1'), '1', 'the session goes on');
$bg->quit;
$nats->resume;
$node->safe_psql('postgres', q{ALTER SYSTEM RESET state_hub_events.publish_timeout; SELECT pg_reload_conf()});

# --- commit order of transactions that touched the same row
$node->safe_psql('postgres', q{CREATE TABLE counter (id int PRIMARY KEY, n int); INSERT INTO counter VALUES (1, 0)});
my $script = $node->basedir . '/order.sql';
open my $fh, '>', $script or die $!;
print $fh q{BEGIN;
WITH u AS (UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n)
SELECT state_hub_events.publish('org.t.order', jsonb_build_object('n', n)) FROM u;
COMMIT;
};
close $fh;
$node->command_ok([ 'pgbench', '-n', '-c', '4', '-j', '4', '-t', '100', '-f', $script, $node->connstr('postgres') ],
    'four sessions update one row 400 times');
my @order = grep { $_->{subject} eq 'org.t.order' } wait_for_messages($nats, 1);
for (1 .. 100) { last if @order >= 400; usleep(100_000); @order = grep { $_->{subject} eq 'org.t.order' } $nats->messages; }
my @n = map { $_->{body}{attributes}{n} } @order;
is(scalar @n, 400, 'all 400 events are in the stream');
is_deeply(\@n, [ sort { $a <=> $b } @n ], 'in the order their transactions committed');

# --- the window PostgreSQL leaves between a transaction becoming visible
# (ProcArrayEndTransaction) and its XACT_EVENT_COMMIT hand-over: session A
# sleeps there (the test setting test_commit_delay_ms, 50 ms, below the
# publisher's 200 ms bound); session B spins until A's row is visible, then
# updates it and commits at once, handing its batch over first.  B's event
# must still be published after A's (its order ticket is larger).
$node->safe_psql('postgres', q{CREATE TABLE win (id int PRIMARY KEY, v int); INSERT INTO win VALUES (1, 0)});
for my $round (1 .. 3)
{
    my $want = 2 * $round - 1;
    my $b = $node->background_psql('postgres');
    $b->query_until(qr/spinning/, qq{\\echo spinning
DO \$\$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 s';
    nv int;
BEGIN
    WHILE (SELECT v FROM win WHERE id = 1) < $want AND clock_timestamp() < deadline LOOP
    END LOOP;
    UPDATE win SET v = v + 1 WHERE id = 1 RETURNING v INTO nv;
    PERFORM state_hub_events.publish('org.t.window', jsonb_build_object('who', 'B', 'v', nv));
END
\$\$;
});
    $node->safe_psql('postgres', q{SET state_hub_events.test_commit_delay_ms = 50;
WITH u AS (UPDATE win SET v = v + 1 WHERE id = 1 RETURNING v)
SELECT state_hub_events.publish('org.t.window', jsonb_build_object('who', 'A', 'v', v)) FROM u;});
    $b->query_safe('SELECT 1');
    $b->quit;
}
my @win;
wait_until('the window test\'s 6 events', 30, sub {
    @win = grep { $_->{subject} eq 'org.t.window' } $nats->messages;
    return @win >= 6;
});
my @wv = map { "$_->{body}{attributes}{who}$_->{body}{attributes}{v}" } @win;
is_deeply(\@wv, [qw(A1 B2 A3 B4 A5 B6)],
    'a transaction that saw another in the window before its hand-over is published after it');
# --- a hand-over slower than the publisher's order bound (200 ms): a
# transaction B blocked on A's row lock is still published after A, because
# A hands its batch over before its row locks are released (B cannot even
# draw its ticket before then).  Were the hand-over after the locks, B would
# commit during A's 1 s delay and the publisher would give up on A's ticket.
$node->safe_psql('postgres', q{CREATE TABLE lk (id int PRIMARY KEY, v int); INSERT INTO lk VALUES (1, 0)});
{
    my $a = $node->background_psql('postgres');
    my $b = $node->background_psql('postgres');
    my $bpid = $b->query_safe('SELECT pg_backend_pid()');
    $a->query_safe(q{BEGIN; SET LOCAL state_hub_events.test_commit_delay_ms = 1000;
WITH u AS (UPDATE lk SET v = v + 1 WHERE id = 1 RETURNING v)
SELECT state_hub_events.publish('org.t.locked', jsonb_build_object('who', 'A', 'v', v)) FROM u;});
    $b->query_until(qr/blocking/, q{\echo blocking
WITH u AS (UPDATE lk SET v = v + 1 WHERE id = 1 RETURNING v)
SELECT state_hub_events.publish('org.t.locked', jsonb_build_object('who', 'B', 'v', v)) FROM u;
});
    ok($node->poll_query_until('postgres',
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $bpid"),
        'B waits for A\'s row lock');
    $a->query_safe('COMMIT');
    $b->query_safe('SELECT 1');
    $a->quit;
    $b->quit;
}
my @lk;
wait_until('the row-lock test\'s 2 events', 30, sub {
    @lk = grep { $_->{subject} eq 'org.t.locked' } $nats->messages;
    return @lk >= 2;
});
is_deeply([ map { "$_->{body}{attributes}{who}$_->{body}{attributes}{v}" } @lk ], [qw(A1 B2)],
    'a transaction blocked on the row lock of a slow hand-over is published after it');

is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_settings WHERE name = 'state_hub_events.test_commit_delay_ms'}),
    '0', 'the test setting is hidden');

# --- stats() shows the publisher's groups: one transaction's 50 events
# enter the queue under one lock and leave it in one take, one group
sub groups
{
    return split /\|/, $node->safe_psql('postgres',
        q{SELECT publisher_batches, publisher_events FROM state_hub_events.stats()});
}
my @g0 = groups();
$node->safe_psql('postgres', 'BEGIN; '
    . join('', map { "SELECT state_hub_events.publish('org.t.group', '{\"i\": $_}'); " } 1 .. 50)
    . 'COMMIT;');
my @g1;
wait_until('the publisher counts 50 more events', 30, sub { @g1 = groups(); $g1[1] - $g0[1] >= 50 });
is($g1[1] - $g0[1], 50, 'stats() publisher_events counts the 50 events');
is($g1[0] - $g0[0], 1, 'stats() publisher_batches counts them as one group');

# --- the publisher killed with kill -9 while sessions commit
my $ppid = decode_json($node->safe_psql('postgres', 'SELECT state_hub_events.ping()'))->{publisher_pid};
my $bench = IPC::Run::start([ 'pgbench', '-n', '-c', '2', '-j', '2', '-T', '4', '-f', $script, $node->connstr('postgres') ],
    '>', \my $bout, '2>', \my $berr);
usleep(1_000_000);
kill 'KILL', $ppid;
$bench->finish;
like($berr, qr/server closed the connection|terminating connection|connection to server .* lost|crash/i,
    'pgbench ended because the crash restart disconnected its sessions');
like(slurp_file($node->logfile), qr/state_hub_events publisher.*terminated by signal 9/,
    'the postmaster saw the publisher killed and restarted the cluster');
my ($up, $k_lost, $k_unconf, $k_ok) = (0, 0, 0, 0);
for (1 .. 300)
{
    my ($r, $o, $e) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.after_kill')});
    $k_lost += $1 while $e =~ /(\d+) of \d+ events of the committed transaction were not published/g;
    $k_unconf += $1 while $e =~ /(\d+) of \d+ events were sent but not confirmed/g;
    if ($r == 0 && $e eq '') { $up = 1; $k_ok++; last; }
    usleep(100_000);
}
ok($up, 'after the crash restart, publishing resumes by itself');
# The crash restart reinitialised the counters: from then on stats(), the
# WARNINGs and the stream agree exactly.
my @k = stats();
is($k[1], $k_lost, 'after the crash: stats() failed == the events the WARNINGs call lost');
is($k[2], $k_unconf, 'after the crash: stats() unconfirmed == the events the WARNINGs call unconfirmed');
is($k[0], $k_ok, 'after the crash: stats() published == the commits without a WARNING');
my $k_stream = $nats->wait_for_count($k_ok, subject => 'org.t.after_kill');
cmp_ok($k_stream, '>=', $k[0], 'the stream holds every event counted published');
cmp_ok($k_stream, '<=', $k[0] + $k[2], 'and at most the unconfirmed ones besides');
my $new_pid = decode_json($node->safe_psql('postgres', 'SELECT state_hub_events.ping()'))->{publisher_pid};
isnt($new_pid, $ppid, 'a new publisher process serves');
($ids, $lost, $unconf) = commit_many(20, 'after');
is($lost + $unconf, 0, '20 more commits publish without a WARNING');
%in_stream = map { $_->{msg_id} => 1 } $nats->messages;
is(scalar(grep { $in_stream{$_} } @$ids), 20, 'and all 20 are in the stream');
my @k2 = stats();
is_deeply([ $k2[0] - $k[0], $k2[1] - $k[1], $k2[2] - $k[2] ], [ 20, 0, 0 ],
    'stats() counts exactly those 20 published, none failed or unconfirmed');
is($nats->count(undef, subject => 'org.t.acct.after'), 20, 'the stream holds exactly 20 of them (natsdump)');

$node->stop;
$nats->stop;
done_testing();
