
# 026_publisher_queue.pl
#    The publisher's queue at its limits: a stream created as the committing
#    session asked (its stream_subjects, duplicate_window, stream_max_age),
#    a transaction bigger than the queue handed over in parts, the wait for
#    room cancellable with an exact count, and the queue published and every
#    outcome reported when the publisher is stopped (fast shutdown).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('queue', $nats, conf => q{
state_hub_events.queue_size = '256kB'
state_hub_events.publish_timeout = '5s'
state_hub_events.retry_interval = '0'
});

sub stats
{
    my ($r) = $node->safe_psql('postgres', q{SELECT published, failed, unconfirmed FROM state_hub_events.stats()});
    return split /\|/, $r;
}

# --- the stream is created with the committing session's settings
my ($ret, $out, $err) = $node->psql('postgres', q{
    SET state_hub_events.stream = 'SESSION_MADE';
    SET state_hub_events.stream_subjects = 'sess.>';
    SET state_hub_events.duplicate_window = '5min';
    SET state_hub_events.stream_max_age = '1d';
    SELECT state_hub_events.publish('sess.created') IS NOT NULL;
});
is($err, '', 'an event to a missing stream, with session settings, is published');
my $info = $nats->stream_info('SESSION_MADE');
is_deeply($info->{subjects}, ['sess.>'], 'the stream has the session\'s stream_subjects');
is($info->{duplicate_window_s}, 300, 'and its duplicate_window');
is($info->{max_age_s}, 86400, 'and its stream_max_age');
is($nats->count('SESSION_MADE'), 1, 'and holds the event');

# --- a transaction bigger than the queue (256 kB) is handed over in parts
my $pad = 'x' x 900;
my @s0 = stats();
($ret, $out, $err) = $node->psql('postgres', qq{
    BEGIN;
    SELECT count(state_hub_events.publish('org.t.big', jsonb_build_object('i', i, 'pad', '$pad')))
      FROM generate_series(1, 2000) i;
    COMMIT;
});
is($err, '', '2,000 events of about 1 kB through a 256 kB queue: no WARNING');
is($nats->wait_for_count(2000, subject => 'org.t.big'), 2000, 'all 2,000 are in the stream');
my @s1 = stats();
is($s1[0] - $s0[0], 2000, 'stats() counts the 2,000 published');

# --- the wait for room is cancellable, and the count is exact
$nats->pause;
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe(q{SET state_hub_events.publish_timeout = '60s'});
@s0 = stats();
$bg->{stderr} = '';
$bg->{stdin} .= qq{BEGIN; SELECT count(state_hub_events.publish('org.t.cancel', jsonb_build_object('i', i, 'pad', '$pad')))
  FROM generate_series(1, 2000) i; COMMIT; SELECT 'commit done';\n};
$bg->{run}->pump_nb;
ok($node->poll_query_until('postgres',
    "SELECT wait_event = 'Extension' FROM pg_stat_activity WHERE pid = $pid"),
    'the commit waits for room in the queue');
my $t0 = time;
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->{run}->pump_nb until $bg->{stdout} =~ /commit done/ || time - $t0 > 10;
my $took = time - $t0;
like($bg->{stdout}, qr/commit done/, 'a cancel ends the wait: COMMIT returns');
cmp_ok($took, '<', 3, "soon (took ${took}s, publish_timeout 60 s)");
my ($lost, $unconf) = (0, 0);
$lost += $1 while $bg->{stderr} =~ /(\d+) of 2000 events of the committed transaction were not published/g;
$unconf += $1 while $bg->{stderr} =~ /(\d+) of 2000 events were sent but not confirmed/g;
like($bg->{stderr}, qr/was cancelled with \d+ events not queued/, 'the WARNING says the wait was cancelled');
is($lost + $unconf, 2000, 'every one of the 2,000 events is in a WARNING');
@s1 = stats();
is($s1[1] - $s0[1], $lost, 'stats() failed == the events the WARNINGs call lost');
is($s1[2] - $s0[2], $unconf, 'stats() unconfirmed == the events the WARNINGs call unconfirmed');
$bg->{stderr} = '';
$bg->{stdout} = '';
is($bg->query('SELECT 1'), '1', 'the session goes on');
$bg->quit;
$nats->resume;
my $back = 0;
for (1 .. 300)
{
    ($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.back')});
    if ($err eq '') { $back = 1; last; }
    usleep(100_000);
}
ok($back, 'publishing resumes');
my $in_stream = $nats->count(undef, subject => 'org.t.cancel');
cmp_ok($in_stream, '<=', $unconf, 'the stream holds at most the unconfirmed events of that commit');

# --- fast shutdown: the publisher publishes what the queue holds first
$nats->pause;
my $holder = $node->background_psql('postgres', on_error_stop => 0);
$holder->{stdin} .= "SELECT state_hub_events.publish('org.t.held');\n";
$holder->{run}->pump_nb;
# the publisher is busy with that event (NATS hung) while these queue up
ok($node->poll_query_until('postgres',
    q{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query ~ 'org.t.held'}),
    'a commit waits for a hung server');
($ret, $out, $err) = $node->psql('postgres', q{
    SET state_hub_events.wait_for_ack = off;
    SELECT state_hub_events.publish('org.t.queued.' || i) FROM generate_series(1, 5) i;
});
is($err, '', 'five events queued without waiting');
my $off = -s $node->logfile;
my $stop = IPC::Run::start([ 'pg_ctl', '-D', $node->data_dir, '-m', 'fast', '-w', 'stop' ],
    '>', \my $sout, '2>', \my $serr);
$node->wait_for_log(qr/received fast shutdown request/, $off);
$nats->resume;
$stop->finish;
$holder->{run}->kill_kill;
$node->_update_pid(0);
is($nats->wait_for_count(5, subject => 'org.t.queued.*', timeout => 10), 5,
    'the five queued events were published before the publisher exited');
like(slurp_file($node->logfile, $off), qr/reported the outcome of \d+ queued events before exiting/,
    'and it logged how many outcomes it reported');

$nats->stop;
done_testing();
