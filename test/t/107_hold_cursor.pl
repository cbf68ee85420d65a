
# 107_hold_cursor.pl
#    publish() in the query of a cursor WITH HOLD: at COMMIT PostgreSQL
#    runs the query again from its start to keep all its rows, so the rows
#    fetched before COMMIT call publish() a second time and their events
#    are published twice, each time with a new id (README, Caveats).  A
#    cursor without HOLD publishes once per row fetched.  Both modes carry
#    the same transaction headers.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('holdcursor', $nats, conf => q{
state_hub_events.database = 'postgres'
});

sub hdr { my ($m, $k) = @_; return $m->{headers}{"Statehub-$k"}; }

for my $mode (qw(immediate durable))
{
    my $out = $node->safe_psql('postgres', qq{
SET state_hub_events.delivery = '$mode';
BEGIN;
DECLARE c CURSOR WITH HOLD FOR
    SELECT state_hub_events.publish('org.t.hold.$mode', jsonb_build_object('i', i)) FROM generate_series(1, 3) i;
FETCH 1 FROM c;
COMMIT;
FETCH ALL FROM c;
CLOSE c;
BEGIN;
DECLARE d CURSOR FOR
    SELECT state_hub_events.publish('org.t.plain.$mode', jsonb_build_object('i', i)) FROM generate_series(1, 3) i;
FETCH 2 FROM d;
COMMIT;
});
    my @m = $nats->wait_for_messages(4, subject => "org.t.hold.$mode", timeout => 30);
    is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1, 1, 2, 3 ],
        "$mode: WITH HOLD: the row fetched before COMMIT is published again");
    my @ids = split /\n/, $out;
    is(scalar @ids, 5, "$mode: the client saw three ids, then two");
    is($ids[0], $m[0]{body}{id}, "$mode: the first fetched is the first published");
    is_deeply([ map { hdr($_, 'Txn-Index') . '/' . hdr($_, 'Txn-Count') } @m ], [ '1/4', '2/4', '3/4', '4/4' ],
        "$mode: one transaction of four events");
    my @p = $nats->wait_for_messages(2, subject => "org.t.plain.$mode", timeout => 30);
    $node->safe_psql('postgres', "SELECT state_hub_events.publish('org.t.end.$mode')");
    $nats->wait_for_count(1, subject => "org.t.end.$mode", timeout => 30);
    is($nats->count(undef, subject => "org.t.plain.$mode"), 2, "$mode: without HOLD: one event per row fetched");
}

$node->stop;
$nats->stop;
done_testing();
