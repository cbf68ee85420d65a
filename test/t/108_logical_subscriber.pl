
# 108_logical_subscriber.pl
#    A logical replication subscriber with emit() triggers (README,
#    Caveats): an ordinary trigger does not fire for replicated rows (the
#    publisher's database published them already); one marked ENABLE
#    ALWAYS fires in the apply worker and publishes each applied
#    transaction as one transaction (its own id, index and count, a
#    rolled-back savepoint's row never replicated).  In immediate mode a
#    two_phase subscription into such a table stops at the first prepared
#    transaction ("cannot PREPARE a transaction that has published
#    events") and publishes nothing of it.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $pub = she_node('lrpub', $nats, conf => q{
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_prepared_transactions = 5
});
my $sub = she_node('lrsub', $nats, conf => q{
max_prepared_transactions = 5
});

sub hdr { my ($m, $k) = @_; return $m->{headers}{"Statehub-$k"}; }

for my $n ($pub, $sub)
{
    $n->safe_psql('postgres', q{
CREATE TABLE items (id int PRIMARY KEY, v text);
CREATE TABLE twophase (id int PRIMARY KEY);
});
}
$pub->safe_psql('postgres', q{
CREATE TRIGGER items_emit AFTER INSERT ON items FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.lr.primary', 'id');
CREATE PUBLICATION p FOR TABLE items;
CREATE PUBLICATION p2 FOR TABLE twophase;
});
$sub->safe_psql('postgres', q{
CREATE TRIGGER items_plain AFTER INSERT ON items FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.lr.plain', 'id');
CREATE TRIGGER items_always AFTER INSERT ON items FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.lr.always', 'id');
ALTER TABLE items ENABLE ALWAYS TRIGGER items_always;
CREATE TRIGGER twophase_always AFTER INSERT ON twophase FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.lr.twophase', 'id');
ALTER TABLE twophase ENABLE ALWAYS TRIGGER twophase_always;
});
my $connstr = $pub->connstr() . ' dbname=postgres';
$sub->safe_psql('postgres', "CREATE SUBSCRIPTION s CONNECTION '$connstr' PUBLICATION p");
$pub->wait_for_catchup('s');

$pub->safe_psql('postgres', q{
BEGIN;
INSERT INTO items VALUES (1, 'a');
SAVEPOINT x;
INSERT INTO items VALUES (2, 'rolled back');
ROLLBACK TO x;
INSERT INTO items VALUES (3, 'b'), (4, 'c');
COMMIT;
});
$pub->wait_for_catchup('s');
is($sub->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM items'), '1,3,4',
    'the subscriber applied the transaction');

my @prim = $nats->wait_for_messages(3, subject => 'org.t.lr.primary', timeout => 30);
my @always = $nats->wait_for_messages(3, subject => 'org.t.lr.always', timeout => 30);
is_deeply([ map { $_->{body}{attributes}{id} } @always ], [ 1, 3, 4 ], 'ENABLE ALWAYS: the apply worker published each applied row');
is_deeply([ map { hdr($_, 'Txn-Index') . '/' . hdr($_, 'Txn-Count') } @always ], [ '1/3', '2/3', '3/3' ],
    'as one transaction of three events');
is(scalar(keys %{ { map { hdr($_, 'Txn-Id') => 1 } @always } }), 1, 'with one transaction id');
isnt(hdr($always[0], 'Txn-Id'), hdr($prim[0], 'Txn-Id'), 'the subscriber\'s own transaction, not the primary\'s');
isnt($always[0]{body}{id}, $prim[0]{body}{id}, 'and its own event ids');

# a marker from the subscriber's own session: the plain trigger had its chance before it
$sub->safe_psql('postgres', q{INSERT INTO items VALUES (100, 'local')});
$nats->wait_for_count(4, subject => 'org.t.lr.always', timeout => 30);
my @plain = $nats->wait_for_messages(1, subject => 'org.t.lr.plain', timeout => 30);
is_deeply([ map { $_->{body}{attributes}{id} } @plain ], [ 100 ],
    'an ordinary trigger fires only for the subscriber\'s own writes');

# two_phase in immediate mode: the apply worker cannot PREPARE with events
my $offset = -s $sub->logfile;
$sub->safe_psql('postgres', "CREATE SUBSCRIPTION s2 CONNECTION '$connstr' PUBLICATION p2 WITH (two_phase = true)");
my $enabled = wait_until('two_phase enabled', 60, sub {
    $sub->safe_psql('postgres', q{SELECT subtwophasestate FROM pg_subscription WHERE subname = 's2'}) eq 'e';
});
ok($enabled, 'the two_phase subscription is ready');
$pub->safe_psql('postgres', q{BEGIN; INSERT INTO twophase VALUES (1); PREPARE TRANSACTION 'lr1';});
my $stopped = wait_until('the apply worker to fail', 60, sub {
    PostgreSQL::Test::Utils::slurp_file($sub->logfile, $offset) =~ /cannot PREPARE a transaction that has published events/;
});
ok($stopped, 'immediate mode: the apply worker fails on the prepared transaction (README, Caveats)');
$pub->safe_psql('postgres', q{COMMIT PREPARED 'lr1'});
$sub->safe_psql('postgres', q{INSERT INTO items VALUES (101, 'marker')});
$nats->wait_for_count(5, subject => 'org.t.lr.always', timeout => 30);
is($nats->count(undef, subject => 'org.t.lr.twophase'), 0, 'nothing of the prepared transaction was published');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0', 'and nothing is left prepared');

$sub->stop;
$pub->stop;
$nats->stop;
done_testing();
