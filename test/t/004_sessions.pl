
# 004_sessions.pl
#    Sessions that exit right after COMMIT lose nothing they sent and never
#    crash (500 in a row, with wait_for_ack off and on); query cancel and
#    pg_terminate_backend during a slow publish are safe.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('sessions', $nats, conf => q{
state_hub_events.publish_timeout = '2s'
state_hub_events.retry_interval = '1s'
});
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.setup')});
my $log_offset = -s $node->logfile;

# Run N one-shot psql sessions; returns the ids they got.
sub one_shot_sessions
{
    my ($n, $subject) = @_;
    my @ids;
    my $connstr = $node->connstr('postgres');
    for my $i (1 .. $n)
    {
        my $id = `psql -X -A -t -d "$connstr" -c "SELECT state_hub_events.publish('$subject', '{\\"i\\": $i}')" 2>&1`;
        chomp $id;
        push @ids, $id;
    }
    return @ids;
}

for my $mode ('off', 'on')
{
    $node->safe_psql('postgres', "LOAD 'state_hub_events'; ALTER SYSTEM SET state_hub_events.wait_for_ack = $mode; SELECT pg_reload_conf();");
    my $n = $mode eq 'off' ? 500 : 200;
    my @ids = one_shot_sessions($n, "org.t.exit.$mode");
    is(scalar(grep { /^[0-9a-f-]{36}$/ } @ids), $n, "wait_for_ack = $mode: $n sessions each got an id");
    my @m = wait_for_messages($nats, $n, undef, subject => "org.t.exit.$mode", timeout => 60);
    is_deeply([ sort map { $_->{msg_id} } @m ], [ sort @ids ],
        "wait_for_ack = $mode: every event of $n sessions that exited right after COMMIT is in the stream");
}

my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/terminated by signal|server process .* was terminated|PANIC/,
    'no backend crashed or was killed by a signal');

# --- a committing backend runs no thread; the publisher's nats.c threads
# --- run with every signal blocked
{
    my $bg = $node->background_psql('postgres');
    $bg->query_safe(q{SELECT state_hub_events.publish('org.t.threads')});
    $bg->query_safe(q{SELECT state_hub_events.ping()});
    my $bpid = $bg->query_safe(q{SELECT pg_backend_pid()});
    my @btids = grep { $_ != $bpid } map { m{/(\d+)$} ? $1 : () } glob("/proc/$bpid/task/*");
    is(scalar @btids, 0, 'a backend that published and pinged runs no other thread');
    my $pid = decode_json($bg->query_safe(q{SELECT state_hub_events.ping()}))->{publisher_pid};
    my @tids = grep { $_ != $pid } map { m{/(\d+)$} ? $1 : () } glob("/proc/$pid/task/*");
    cmp_ok(scalar @tids, '>=', 3, "the publisher runs nats.c threads (@{[ scalar @tids ]})");
    my @open;
    for my $tid (@tids)
    {
        my ($blk) = slurp_file("/proc/$pid/task/$tid/status") =~ /^SigBlk:\s*([0-9a-f]+)/m;
        my $mask = hex(substr($blk, -8));    # signals 1..32
        for my $sig (1, 2, 3, 10, 12, 14, 15, 23)    # HUP INT QUIT USR1 USR2 ALRM TERM URG
        {
            push @open, "$tid:$sig" unless $mask & (1 << ($sig - 1));
        }
    }
    is_deeply(\@open, [], 'every nats.c thread blocks the signals PostgreSQL handles');
    $bg->quit;
}

# --- cancel and terminate while a COMMIT waits for a hung server
$node->safe_psql('postgres', "LOAD 'state_hub_events'; ALTER SYSTEM RESET state_hub_events.wait_for_ack; SELECT pg_reload_conf();");
$node->safe_psql('postgres', q{CREATE TABLE t (id int)});
for my $action ('pg_cancel_backend', 'pg_terminate_backend')
{
    # the publisher's back-off after the previous hang passes first
    for (1 .. 100)
    {
        my ($r, $o, $e) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.connect')});
        last if $e eq '';
        usleep(100_000);
    }
    my $bg = $node->background_psql('postgres', on_error_stop => 0);
    my $pid = $bg->query_safe(q{SELECT pg_backend_pid()});
    # a publish_timeout far beyond the 10 s allowed below: only the
    # cancel or the termination can end the wait in time
    $bg->query_safe(q{SET state_hub_events.publish_timeout = '60s'});
    $nats->pause;
    $bg->{stdin} .= "BEGIN; INSERT INTO t VALUES (1); SELECT state_hub_events.publish('org.t.slow'); COMMIT;\n";
    $bg->{run}->pump_nb;
    # wait until the backend is inside COMMIT, waiting for acknowledgements
    $node->poll_query_until('postgres',
        "SELECT state = 'active' AND query ~ '^COMMIT' FROM pg_stat_activity WHERE pid = $pid");
    $node->safe_psql('postgres', "SELECT $action($pid)");
    my $t0 = time;
    if ($action eq 'pg_terminate_backend')
    {
        $node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid");
        cmp_ok(time - $t0, '<', 10, "$action: the backend left its ack wait (publish_timeout 60 s) at once");
    }
    else
    {
        until ($bg->{stderr} =~ /not confirmed|not published/ || time - $t0 > 10)
        {
            $bg->{run}->pump_nb;
            usleep(10_000);
        }
        like($bg->{stderr}, qr/not confirmed|not published/, "$action: COMMIT finished with a WARNING");
        $bg->quit;
    }
    $nats->resume;
    is($node->safe_psql('postgres', 'SELECT count(*) >= 1 FROM t'), 't',
        "$action during the ack wait: the transaction is committed");
    ok($node->safe_psql('postgres', 'SELECT 1') eq '1', "$action: the server is up");
    $node->safe_psql('postgres', 'TRUNCATE t');
}
$log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/terminated by signal|PANIC|was terminated by/, 'no crash after cancel or terminate');

$node->stop;
$nats->stop;
done_testing();
