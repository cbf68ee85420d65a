# 027_publisher_restart.pl
#    A restarted publisher's first connection attempt is waited for, as at
#    server start: the "not running" reason its predecessor left in shared
#    memory must not make backends refuse their commits at once while the
#    new publisher connects (the event is published once NATS answers).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('restart_connect', $nats, conf => q{
state_hub_events.connect_timeout = '30s'
state_hub_events.publish_timeout = '30s'
state_hub_events.retry_interval = '0'
});

my ($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.first') IS NOT NULL});
is($err, '', 'the first event is published (the stream exists, the publisher is connected)');

my $old = $node->safe_psql('postgres', q{SELECT state_hub_events.ping()->>'publisher_pid'});
ok($old > 0, 'the publisher runs');

# NATS hangs: the next publisher's first connection attempt waits for it
$nats->pause;
my $off = -s $node->logfile;
kill "TERM", $old;
$node->wait_for_log(qr/publisher: connecting to NATS at/, $off);

my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->{stderr} = '';
$bg->{stdout} = '';
$bg->{stdin} .= "SELECT state_hub_events.publish('org.t.during_connect') IS NOT NULL; SELECT 'commit done';\n";
$bg->{run}->pump_nb;
my $t0 = time;
my $waiting = 0;
while (time - $t0 < 20)
{
    $bg->{run}->pump_nb;
    last if $bg->{stdout} =~ /commit done/;
    if ($node->safe_psql('postgres',
            "SELECT wait_event = 'Extension' FROM pg_stat_activity WHERE pid = $pid") eq 't')
    {
        $waiting = 1;
        last;
    }
    usleep(50_000);
}
ok($waiting, 'the commit waits for the new publisher\'s first attempt instead of being refused')
  or diag("stderr: $bg->{stderr}");
$nats->resume;
$t0 = time;
$bg->{run}->pump_nb until $bg->{stdout} =~ /commit done/ || time - $t0 > 40;
like($bg->{stdout}, qr/commit done/, 'the commit returns');
unlike($bg->{stderr}, qr/not running/, 'no WARNING that the (running) publisher is not running');
is($nats->wait_for_count(1, subject => 'org.t.during_connect', timeout => 20), 1,
    'the event committed during the first attempt is in the stream');
$bg->quit;

$nats->stop;
done_testing();
