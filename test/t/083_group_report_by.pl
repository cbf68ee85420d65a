
# 083_group_report_by.pl
#    The publisher reports a group's outcomes once its last acknowledgement
#    is in, unless acks are still awaited at the group's earliest session
#    deadline: from then on each is reported as it arrives.  Otherwise a
#    session whose event was stored at once would be told "not confirmed"
#    because another event of the same group kept it open longer than the
#    session waits (its publish_timeout plus a grace of connect_timeout).
#    Sequence: B (wait_for_ack off: the publisher's publish_timeout, 5 s)
#    publishes on a subject no stream captures but a client listens to and
#    never answers, so its ack never comes; the publisher holds that take
#    (batch_linger, nobody waits for it) until A (wait_for_ack on,
#    publish_timeout 1 s) commits: both go in one write.  A's event is
#    acknowledged at once; A's COMMIT returns without a WARNING, at its
#    deadline, while the group still waits for B's ack (until 5 s); then the
#    group ends, one write of two events, B's unconfirmed.

use strict;
use warnings;

use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
$nats->create_stream('ACTIVITY_EVENTS', 'org.t.>');
my $node = she_node('report_by', $nats, conf => q{
state_hub_events.create_stream = off
state_hub_events.stream_subjects = 'org.>'
state_hub_events.publish_timeout = '5s'
state_hub_events.connect_timeout = '1s'
state_hub_events.batch_linger = '1000ms'
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{SELECT state_hub_events.publish('org.t.warmup')});
is($nats->wait_for_count(1), 1, 'warmed up');

# a client that takes the requests on org.x.silent and never answers
my $silent = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $nats->port, Proto => 'tcp')
  or die "cannot connect to nats-server: $!";
my $info = <$silent>;
like($info, qr/^INFO /, 'a raw client connected');
print $silent "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB org.x.silent 1\r\nPING\r\n";
my $pong = '';
while (defined(my $line = <$silent>))
{
    $pong = $line, last if $line =~ /^PONG/;
}
like($pong, qr/^PONG/, 'it listens on org.x.silent');

my $stats = q{SELECT publisher_batches || '|' || publisher_events || '|' || published || '|' || unconfirmed
              FROM state_hub_events.stats()};
my @s0 = split /\|/, sql($stats);

my $b = $node->background_psql('postgres');
$b->query_safe(q{SET state_hub_events.wait_for_ack = off});
my $a = $node->background_psql('postgres', on_error_stop => 0);
$a->query_safe(q{SET state_hub_events.wait_for_ack = on});
$a->query_safe(q{SET state_hub_events.publish_timeout = '1s'});

$b->query_safe(q{SELECT state_hub_events.publish('org.x.silent')});
my $t0 = time;
$a->{stdin} .= "SELECT state_hub_events.publish('org.t.fast');\nSELECT 'a done';\n";
$a->{run}->pump_nb;
until ($a->{stdout} =~ /a done/ || time - $t0 > 30)
{
    $a->{run}->pump_nb;
    usleep(10_000);
}
my $secs = time - $t0;
my @s1 = split /\|/, sql($stats);
like($a->{stdout}, qr/a done/, "A's COMMIT returned");
note(sprintf("A's COMMIT returned after %.2f s", $secs));
is($a->{stderr}, '', "A, whose event was stored at once, is told nothing went wrong");
is($s1[0] - $s0[0], 0, "A returned while its group still waited for B's ack");
is($s1[2] - $s0[2], 1, "stats(): A's event published");
is($nats->wait_for_count(1, subject => 'org.t.fast'), 1, "A's event is in the stream");

# the group ends at B's deadline: one write of both, B's unconfirmed
ok(wait_until('the group to end', 30, sub {
    @s1 = split /\|/, sql($stats);
    $s1[0] - $s0[0] >= 1 }), 'the group ended');
is($s1[0] - $s0[0], 1, 'both events went in one write');
is($s1[1] - $s0[1], 2, '... of two events');
is($s1[2] - $s0[2], 1, "stats(): A's published, counted once");
is($s1[3] - $s0[3], 1, "and B's unconfirmed");

close($silent);
$a->quit;
$b->quit;
$node->stop;
$nats->stop;
done_testing();
