
# 061_cancel_procedure_commit.pl
#    A cancel that ends a COMMIT's wait for the publisher (nats-server hung)
#    ends the procedure that COMMITs too (CALL backfill(...), or any
#    procedure with COMMIT in a loop): the wait consumes the cancel, as for
#    synchronous replication, but inside a procedure it is set pending again,
#    so the CALL stops after the commit it was in.  A lone COMMIT that is
#    cancelled still returns without an error (it has committed), and its
#    WARNING says the wait was cancelled.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $iterations = 20;
my $nats = NatsServer->new->start;
my $node = she_node('cancelproc', $nats, conf => q{
state_hub_events.publish_timeout = '4s'
});
$node->safe_psql('postgres', qq{
CREATE TABLE done (i int PRIMARY KEY);
CREATE PROCEDURE loop_commit() LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..$iterations LOOP
        INSERT INTO done VALUES (i);
        PERFORM state_hub_events.publish('org.t.proc');
        COMMIT;
    END LOOP;
END
\$\$;
});
is($node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.first') IS NOT NULL}),
    't', 'the stream exists');
is($nats->wait_for_count(1, subject => 'org.t.first'), 1, 'the first event landed');

# Start $sql in a background session; once it waits in a COMMIT for the
# publisher, cancel it; return the session's stderr once $done matches it.
sub cancel_in_commit_wait
{
    my ($sql, $done) = @_;
    my $bg = $node->background_psql('postgres', on_error_stop => 0);
    my $pid = $bg->query_safe('SELECT pg_backend_pid()');
    $bg->{stdin} .= "$sql\n";
    $bg->{run}->pump_nb;
    ok($node->poll_query_until('postgres',
        "SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $pid"),
        'the session waits in its COMMIT for the publisher');
    $node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
    my $t0 = time;
    $bg->{run}->pump_nb until $bg->{stderr} =~ $done || time - $t0 > 60;
    # let the statements that follow finish before the next query
    $bg->query('SELECT 1');
    my $err = $bg->{stderr};
    $bg->{stderr} = '';
    $bg->{stdout} = '';
    is($bg->query_safe('SELECT 1'), '1', 'the session goes on');
    $bg->quit;
    return $err;
}

$nats->pause;

# --- a procedure: the cancel ends the CALL after the commit it was in
my $err = cancel_in_commit_wait('CALL loop_commit();', qr/canceling statement|ERROR/);
like($err, qr/WARNING:.*the wait for the publisher's outcome was cancelled/s,
    "the commit's WARNING says its wait was cancelled");
like($err, qr/ERROR:  canceling statement due to user request/,
    'the CALL ends with the cancel');
my $committed = $node->safe_psql('postgres', 'SELECT count(*) FROM done');
cmp_ok($committed, '<=', 2,
    "the procedure stopped after the commit the cancel hit ($committed of $iterations iterations committed)");
cmp_ok($committed, '>=', 1, 'the commit that was waiting stays committed');

# --- a lone COMMIT: cancelled, it still returns without an error
$err = cancel_in_commit_wait(
    q{BEGIN; SELECT state_hub_events.publish('org.t.lone'); COMMIT; SELECT 'after' AS marker;},
    qr/WARNING:.*cancelled/s);
like($err, qr/WARNING:.*the wait for the publisher's outcome was cancelled/s,
    "a lone COMMIT's WARNING says its wait was cancelled");
unlike($err, qr/ERROR/, 'and the COMMIT reports no error: it has committed');

$nats->resume;
$node->stop;
$nats->stop;
done_testing();
