
# 082_terminate_commit_warning.pl
#    pg_terminate_backend() of a session whose COMMIT waits for the
#    publisher (nats-server hung): the wait ends at once, the transaction
#    stays committed, stats() counts the events, and the session is told
#    before its connection is dropped, as synchronous replication tells it
#    (a WARNING, then no more output to the client): the client gets the
#    WARNING that counts its events unconfirmed (or lost), whose DETAIL says
#    the session is terminating.  (Found by 081's load: queue.c set
#    whereToSendOutput = DestNone when the wait ended, before buffer.c's
#    report_batch() raised the WARNING, so it went only to the server log
#    and the client saw "server closed the connection unexpectedly".)

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('termwarn', $nats, conf => q{
state_hub_events.publish_timeout = '60s'
});
$node->safe_psql('postgres', q{CREATE TABLE done (i int)});
is($node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.first') IS NOT NULL}),
    't', 'the stream exists');
is($nats->wait_for_count(1, subject => 'org.t.first'), 1, 'the first event landed');
$node->safe_psql('postgres', 'SELECT state_hub_events.stats_reset()');

$nats->pause;
my $script = $node->basedir . '/victim.sql';
open my $fh, '>', $script or die $!;
print $fh "SET application_name = 'victim';\n"
  . "BEGIN; INSERT INTO done VALUES (1); SELECT state_hub_events.publish('org.t.term');"
  . " SELECT state_hub_events.publish('org.t.term'); COMMIT;\n";
close $fh;
my ($out, $err) = ('', '');
my $h = IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-f', $script ],
    '>', \$out, '2>', \$err);
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity
    WHERE application_name = 'victim' AND query ~ '^COMMIT' AND wait_event_type = 'Extension'}),
    'the session waits in its COMMIT for the publisher');
$node->safe_psql('postgres', q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'victim'});
my $deadline = time + 10;
while ($h->pumpable && time < $deadline)
{
    $h->pump_nb;
    usleep(10_000);
}
ok(!$h->pumpable, 'the terminated session ended at once (publish_timeout 60 s)');
$h->kill_kill if $h->pumpable;
eval { $h->finish };
$nats->resume;

is($node->safe_psql('postgres', 'SELECT count(*) FROM done'), '1', 'the transaction is committed');
ok(wait_until('stats() to count both events', 30, sub {
    $node->safe_psql('postgres', 'SELECT published + failed + unconfirmed FROM state_hub_events.stats()') == 2 }),
    'stats() counts both events');
note("client stderr: $err");
like($err, qr/WARNING:  state_hub_events: 2 of 2 events (?:were sent but not confirmed|of the committed transaction were not published)/,
    'the client got the WARNING that counts its events');
like($err, qr/DETAIL:  .*terminat/, 'its DETAIL says the session is terminating');

$node->stop;
$nats->stop;
done_testing();
