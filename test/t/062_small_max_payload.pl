
# 062_small_max_payload.pl
#    A nats-server with a small max_payload (4 kB): the size an event may
#    have at the call is the server's limit less room for the headers, half
#    of the limit on such small servers, never zero or negative.  An event
#    that fits is published; one over the limit is refused at the call.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new(extra_conf => "max_payload: 4096\n")->start;
my $node = she_node('smallpayload', $nats);

my ($ret, $out, $err) = $node->psql('postgres',
    q{SELECT state_hub_events.publish('org.t.small', '{"i": 1}') IS NOT NULL});
is($err, '', 'a small event is published');
is($nats->wait_for_count(1, subject => 'org.t.small'), 1, 'and stored');

# the publisher has learnt the server's limit; an envelope of ~1.2 kB fits
ok($node->poll_query_until('postgres', q{SELECT published >= 1 FROM state_hub_events.stats()}),
    'the publisher reported the first event');
($ret, $out, $err) = $node->psql('postgres',
    q{SELECT state_hub_events.publish('org.t.mid', jsonb_build_object('pad', repeat('m', 1000))) IS NOT NULL});
is($err, '', 'an event of ~1.2 kB is accepted at the call (the limit is not zero)');
is($nats->wait_for_count(1, subject => 'org.t.mid'), 1, 'and stored');

($ret, $out, $err) = $node->psql('postgres',
    q{SELECT state_hub_events.publish('org.t.big', jsonb_build_object('pad', repeat('b', 3000)))});
isnt($ret, 0, 'an event of ~3.2 kB is refused at the call (the limit is not negative, i.e. unlimited)');
like($err, qr/limited to 2048 bytes/, 'the limit is half of the 4 kB max_payload');
is($nats->count(undef, subject => 'org.t.big'), 0, 'and nothing of it reaches the stream');

$node->stop;
$nats->stop;
done_testing();
