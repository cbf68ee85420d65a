
# 003_faults.pl
#    NATS down, refusing or hung: COMMIT returns, a WARNING says what was
#    lost or unconfirmed, counters record it, waits are bounded and not paid
#    again by every commit, publishing resumes by itself, and the wait for
#    acknowledgements does not hold row locks.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('faults', $nats, conf => q{
state_hub_events.connect_timeout = '1s'
state_hub_events.publish_timeout = '1s'
state_hub_events.retry_interval = '2s'
});

# query_safe on a background session, forgetting earlier WARNINGs.
sub qs
{
    my ($bg, $sql) = @_;
    $bg->{stderr} = "";
    return $bg->query_safe($sql);
}

# Run one query in a background session; returns (stdout, stderr, seconds).
sub timed
{
    my ($bg, $sql) = @_;
    $bg->{stderr} = '';
    my $t0 = time;
    my $out = $bg->query($sql);
    my $err = $bg->{stderr};
    return ($out, $err, time - $t0);
}

$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.setup')});
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my ($out, $err, $secs) = timed($bg, q{SELECT state_hub_events.publish('org.t.up') IS NOT NULL});
is($err, '', 'publishing works while NATS is up');

# --- NATS stopped: a connected session refuses at once
$nats->stop;
($out, $err, $secs) = timed($bg, q{SELECT state_hub_events.publish('org.t.down1') IS NOT NULL});
is($out, 't', 'COMMIT returns while NATS is down');
like($err, qr/WARNING:.*1 of 1 events of the committed transaction were not published/,
    'a WARNING says the event was not published');
like($err, qr/not connected to NATS|NATS was unavailable|cannot connect/, 'and why');
cmp_ok($secs, '<', 1 + 1 + 2, 'the wait is bounded by connect_timeout + publish_timeout');

my @secs;
for my $i (1 .. 5)
{
    ($out, $err, $secs) = timed($bg,
        qq{BEGIN; SELECT state_hub_events.publish('org.t.down.$i'); SELECT state_hub_events.publish('org.t.down.$i.b'); COMMIT;});
    push @secs, $secs;
}
like($err, qr/2 of 2 events/, 'the WARNING counts the events of the transaction');
cmp_ok((sort { $b <=> $a } @secs)[0], '<', 0.5, 'while NATS stays down, later commits do not wait');

# a fresh backend while the server is down: one quick refused connection
my ($ret, $o2, $e2) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.down.fresh') IS NOT NULL});
my $fresh_failed = 1;
is($ret, 0, 'a fresh backend commits while NATS is down');
like($e2, qr/WARNING:.*not published/, 'and is warned');

my $failed = qs($bg, q{SELECT failed FROM state_hub_events.stats()});
is($failed, 1 + 10 + $fresh_failed, 'stats() counts every refused event (cluster-wide)');
my $last = qs($bg, q{SELECT last_error IS NOT NULL AND last_error_at IS NOT NULL FROM state_hub_events.stats()});
is($last, 't', 'stats() keeps the last error and its time');

# --- NATS back: publishing resumes by itself in the same session
$nats->start;
my $resumed = 0;
my $t0 = time;
while (time - $t0 < 30)
{
    ($out, $err, $secs) = timed($bg, q{SELECT state_hub_events.publish('org.t.resumed') IS NOT NULL});
    if ($err eq '') { $resumed = 1; last; }
    usleep(200_000);
}
ok($resumed, 'publishing resumed by itself after NATS came back');
my @m = $nats->messages;
is($m[-1]{subject}, 'org.t.resumed', 'the resumed event is in the stream');
is(scalar(grep { $_->{subject} =~ /^org\.t\.down/ } @m), 0, 'events refused while down never appear');

# --- NATS hung, and the wait for acknowledgements does not hold row locks
$node->safe_psql('postgres', q{CREATE TABLE hot (id int PRIMARY KEY, n int); INSERT INTO hot VALUES (1, 0);});
my $locker = $node->background_psql('postgres', on_error_stop => 0);
qs($locker, q{SELECT state_hub_events.publish('org.t.locker_connects')});
$nats->pause;
qs($locker, q{BEGIN});
qs($locker, q{UPDATE hot SET n = n + 1 WHERE id = 1});
qs($locker, q{SELECT state_hub_events.publish('org.t.locked')});
# a second session queues on the row lock
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->{stdin} .= "UPDATE hot SET n = n + 1 WHERE id = 1;\nSELECT 'waiter done', extract(epoch from clock_timestamp());\n";
$waiter->{run}->pump_nb;
$node->poll_query_until('postgres',
    q{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'});
$locker->{stderr} = '';
my $commit_t0 = time;
$locker->query(q{COMMIT});
my $commit_end = time;
until ($waiter->{stdout} =~ /waiter done\|([0-9.]+)/ || time - $commit_end > 10)
{
    $waiter->{run}->pump_nb;
    usleep(10_000);
}
my ($waiter_done) = $waiter->{stdout} =~ /waiter done\|([0-9.]+)/;
diag("timed out after 10 s waiting for the session queued on the row lock to finish") unless defined $waiter_done;
$waiter_done //= 1e12;
like($locker->{stderr}, qr/sent but not confirmed/, 'the locker waited for acknowledgements of a hung server');
cmp_ok($commit_end - $commit_t0, '>=', 0.9, 'its COMMIT took about publish_timeout');
cmp_ok($waiter_done, '<', $commit_end - 0.5,
    'the session queued on its row lock went on before that wait ended');
$locker->quit;
$waiter->quit;

# --- NATS hung (SIGSTOP): the first commit waits publish_timeout, then backs off
# (first let the publisher's back-off from the hang above pass)
$nats->resume;
my $recovered = 0;
for (1 .. 100)
{
    ($out, $err, $secs) = timed($bg, q{SELECT state_hub_events.publish('org.t.recover') IS NOT NULL});
    if ($err eq '') { $recovered = 1; last; }
    usleep(100_000);
}
ok($recovered, 'publishing works again after the hang');
my $unconfirmed_before = qs($bg, q{SELECT unconfirmed FROM state_hub_events.stats()});
my @hang0 = split /\|/, qs($bg, q{SELECT published, failed, unconfirmed FROM state_hub_events.stats()});
$nats->pause;
($out, $err, $secs) = timed($bg, q{SELECT state_hub_events.publish('org.t.hung1') IS NOT NULL});
is($out, 't', 'COMMIT returns while NATS is hung');
like($err, qr/1 of 1 events were sent but not confirmed/, 'the WARNING says sent but unconfirmed');
cmp_ok($secs, '>=', 0.9, 'it waited about publish_timeout');
cmp_ok($secs, '<', 1 + 1 + 2, 'and no longer than connect_timeout + publish_timeout');
my $unconfirmed = qs($bg, q{SELECT unconfirmed FROM state_hub_events.stats()});
is($unconfirmed - $unconfirmed_before, 1, 'stats() counts it as unconfirmed');

@secs = ();
for my $i (1 .. 3)
{
    ($out, $err, $secs) = timed($bg, qq{SELECT state_hub_events.publish('org.t.hung.$i') IS NOT NULL});
    push @secs, $secs;
}
like($err, qr/not published/, 'later commits while hung refuse their events');
cmp_ok((sort { $b <=> $a } @secs)[0], '<', 0.5, 'and do not each pay publish_timeout again');

$nats->resume;

# --- every event of the hang is counted once: hung1 as unconfirmed by its
# backend, not again when its late acknowledgement (or the publisher's own
# timeout) reaches the batch the backend gave up on; hung.1-3 as failed
my $k = 0;
my $back = 0;
for (1 .. 100)
{
    ($out, $err, $secs) = timed($bg, q{SELECT state_hub_events.publish('org.t.after_hang') IS NOT NULL});
    $k++;
    if ($err eq '') { $back = 1; last; }
    usleep(100_000);
}
ok($back, 'publishing works again after the second hang');
my @hang1 = split /\|/, qs($bg, q{SELECT published, failed, unconfirmed FROM state_hub_events.stats()});
is(($hang1[0] - $hang0[0]) + ($hang1[1] - $hang0[1]) + ($hang1[2] - $hang0[2]), 4 + $k,
    "stats(): the hang's 4 events and the $k after it are each counted once");
is($hang1[2] - $hang0[2], 1, 'stats(): still exactly one unconfirmed');
$bg->quit;

# --- refused by the server: a stream that does not capture the subject
my $n2 = NatsServer->new->start;
$n2->create_stream('OTHER', 'org.>');
she_set_conn($node, nats_url => $n2->url);
($ret, $o2, $e2) = $node->psql('postgres', qq{
    SET state_hub_events.create_stream = off;
    SELECT state_hub_events.publish('org.t.elsewhere') IS NOT NULL;
});
like($e2, qr/1 of 1 events of the committed transaction were not published/, 'a subject captured by another stream is refused');
like($e2, qr/JetStream refused|expected stream/i, 'the WARNING gives JetStream\'s reason');
is($n2->stream_info('OTHER')->{messages}, 0, 'and nothing landed in the other stream');
$n2->stop;

# --- connect_timeout is the budget across all listed servers
my @hung = map { NatsServer->new->start } 1 .. 3;
$_->pause for @hung;
my $urls = join(',', map { $_->url } @hung);

# A commit that arrives while the publisher is inside a connection attempt
# after its last one failed (here: $n2 is gone) is refused at once, not
# held for the attempt (connect_timeout 3 s, per try, across three hung
# servers).
my $refused = 0;
for (1 .. 100)
{
    ($ret, $o2, $e2) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.n2_gone')});
    if ($e2 =~ /not connected to NATS/) { $refused = 1; last; }
    usleep(100_000);
}
ok($refused, 'the publisher is not connected (its server is gone)');
my $off = -s $node->logfile;
$node->safe_psql('postgres', qq{ALTER SYSTEM SET state_hub_events.nats_url = '$urls';
    ALTER SYSTEM SET state_hub_events.connect_timeout = '3s'; SELECT pg_reload_conf();});
$node->wait_for_log(qr/state_hub_events publisher: connecting to NATS at/, $off);
my $t3 = time;
($ret, $o2, $e2) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.while_connecting') IS NOT NULL});
my $took3 = time - $t3;
like($e2, qr/1 of 1 events of the committed transaction were not published.*\n.*not connected to NATS/,
    'a commit during that attempt is refused as not connected');
unlike(slurp_file($node->logfile, $off), qr/state_hub_events publisher: (?:not )?connected to NATS/,
    'and returned while the attempt still ran');
cmp_ok($took3, '<', 0.5, "without waiting for it (took ${took3}s, connect_timeout 3 s)");
$node->wait_for_log(qr/state_hub_events publisher: not connected to NATS/, $off);
she_set_conn($node, nats_url => undef, connect_timeout => '1s');

my $t1 = time;
like(she_set_conn($node, nats_url => $urls), qr/not connected to NATS/,
    'three hung servers: the publisher is not connected');
my $spent = time - $t1;
cmp_ok($spent, '<', 2.5, "connecting gave up within connect_timeout (1 s) for all three together (took ${spent}s)");
my $t2 = time;
($ret, $o2, $e2) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.three_hung') IS NOT NULL});
like($e2, qr/not published/, 'three hung servers: the event is not published');
cmp_ok(time - $t2, '<', 0.5, 'and the commit does not pay a connect timeout');
$_->stop for @hung;

$node->stop;
$nats->stop;
done_testing();
