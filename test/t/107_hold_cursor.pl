
# 107_hold_cursor.pl
#    publish() in a query kept past COMMIT (README, Caveats): at COMMIT
#    PostgreSQL runs the rest of a cursor WITH HOLD's query to keep its
#    rows, so every row's event is published with the committing
#    transaction; a scrollable held cursor (the default for a function
#    scan) runs the query again from its start, so the rows fetched before
#    COMMIT are published twice, with new ids; NO SCROLL publishes each row
#    once.  A cursor without HOLD publishes once per row fetched.  A
#    procedure's FOR loop over such a query with a COMMIT inside: all of
#    the query's events belong to the first transaction.  Both modes carry
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

# $mode's events on $subject once a later marker transaction arrived
sub settled
{
    my ($mode, $subject, $n) = @_;
    $node->safe_psql('postgres', "SET state_hub_events.delivery = '$mode'; SELECT state_hub_events.publish('org.t.end.$subject')");
    $nats->wait_for_count(1, subject => "org.t.end.$subject", timeout => 30);
    return $nats->messages(undef, undef, subject => "org.t.$subject");
}

$node->safe_psql('postgres', q{
CREATE PROCEDURE loop_commit(subject text) LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT i, state_hub_events.publish(subject, jsonb_build_object('i', i))
               FROM generate_series(1, 3) i LOOP
        COMMIT;
    END LOOP;
END $$;
});

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
DECLARE n NO SCROLL CURSOR WITH HOLD FOR
    SELECT state_hub_events.publish('org.t.noscroll.$mode', jsonb_build_object('i', i)) FROM generate_series(1, 3) i;
FETCH 1 FROM n;
COMMIT;
CLOSE n;
BEGIN;
DECLARE d CURSOR FOR
    SELECT state_hub_events.publish('org.t.plain.$mode', jsonb_build_object('i', i)) FROM generate_series(1, 3) i;
FETCH 2 FROM d;
COMMIT;
CALL loop_commit('org.t.loop.$mode');
});
    my @ids = split /\n/, $out;
    is(scalar @ids, 6, "$mode: the client saw three ids, one and two");

    my @m = settled($mode, "hold.$mode");
    is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1, 1, 2, 3 ],
        "$mode: scrollable WITH HOLD: the row fetched before COMMIT is published again");
    is($ids[0], $m[0]{body}{id}, "$mode: the first published is the one the client saw");
    is_deeply([ map { hdr($_, 'Txn-Index') . '/' . hdr($_, 'Txn-Count') } @m ], [ '1/4', '2/4', '3/4', '4/4' ],
        "$mode: one transaction of four events");

    @m = settled($mode, "noscroll.$mode");
    is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1, 2, 3 ],
        "$mode: NO SCROLL WITH HOLD: every row once, the unfetched ones at COMMIT");
    is_deeply([ map { hdr($_, 'Txn-Index') . '/' . hdr($_, 'Txn-Count') } @m ], [ '1/3', '2/3', '3/3' ],
        "$mode: in one transaction");

    @m = settled($mode, "plain.$mode");
    is(scalar @m, 2, "$mode: without HOLD: one event per row fetched");

    @m = settled($mode, "loop.$mode");
    is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1, 2, 3 ], "$mode: FOR loop with COMMIT: every row once");
    is_deeply([ map { hdr($_, 'Txn-Index') . '/' . hdr($_, 'Txn-Count') } @m ], [ '1/3', '2/3', '3/3' ],
        "$mode: all in the loop's first transaction");
}

$node->stop;
$nats->stop;
done_testing();
