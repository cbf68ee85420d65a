
# 106_durable_prepared_order.pl
#    Durable mode, PREPARE TRANSACTION: the events are written to the
#    outbox at PREPARE and leave at COMMIT PREPARED, also when that runs in
#    another session after a restart; exactly once, with the prepared
#    transaction's headers (its xid, index and count of the events that
#    survived a savepoint rollback and a deferred trigger's event, the
#    commit key taken at PREPARE).  ROLLBACK PREPARED publishes nothing.
#    The commit key is the outbox sequence taken at PREPARE, so a
#    transaction committed while the other was prepared has a larger key
#    and enters the stream first: messages do not enter the stream in key
#    order (README, "Transactions as units" and "Order after a failure").

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('prepared', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
max_prepared_transactions = 5
});

sub hdr { my ($m, $k) = @_; return $m->{headers}{"Statehub-$k"}; }
sub backlog { return $node->safe_psql('postgres', 'SELECT count(*) FROM state_hub_events.outbox'); }

$node->safe_psql('postgres', q{
CREATE TABLE t (id int);
CREATE FUNCTION t_deferred() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM state_hub_events.publish('org.t.prep.yes', jsonb_build_object('deferred', NEW.id));
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER t_deferred AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION t_deferred();
});

# g1: two events survive a savepoint rollback, a deferred trigger adds a third at PREPARE
my $out = $node->safe_psql('postgres', q{
BEGIN;
SELECT state_hub_events.publish('org.t.prep.yes', '{"i": 1}');
SAVEPOINT s;
SELECT state_hub_events.publish('org.t.prep.yes', '{"i": "rolled back"}');
ROLLBACK TO s;
SELECT state_hub_events.publish('org.t.prep.yes', '{"i": 2}');
INSERT INTO t VALUES (7);
SELECT 'xid=' || pg_current_xact_id();
PREPARE TRANSACTION 'g1';
});
my ($xid) = $out =~ /xid=(\d+)/;
$node->safe_psql('postgres', q{
BEGIN;
SELECT state_hub_events.publish('org.t.prep.no', '{"i": 1}');
PREPARE TRANSACTION 'g2';
});
is(backlog(), 0, 'prepared events are not visible in the outbox');

# a later transaction commits while both are prepared: it goes first
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.prep.later')});
my @later = $nats->wait_for_messages(1, subject => 'org.t.prep.later', timeout => 30);
is(scalar @later, 1, 'a transaction committed meanwhile is published');

# restart, then COMMIT / ROLLBACK PREPARED from a new session
$node->restart;
$node->safe_psql('postgres', q{COMMIT PREPARED 'g1'; ROLLBACK PREPARED 'g2';});
my $drained = wait_until('the outbox to drain', 60, sub { backlog() == 0 });
ok($drained, 'the worker published the committed prepared transaction');
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.prep.after')});
$nats->wait_for_count(1, subject => 'org.t.prep.after', timeout => 30);

my @m = $nats->messages(undef, undef, subject => 'org.t.prep.yes');
is(scalar @m, 3, 'COMMIT PREPARED after a restart: its three events, once each');
is_deeply([ map { hdr($_, 'Txn-Id') } @m ], [ ($xid) x 3 ], 'Statehub-Txn-Id: the prepared transaction');
is_deeply([ map { hdr($_, 'Txn-Index') . '/' . hdr($_, 'Txn-Count') } @m ], [ '1/3', '2/3', '3/3' ],
    'index and count: the rolled-back event is not counted, the deferred trigger\'s is');
is_deeply([ map { $_->{body}{attributes}{i} // "d$_->{body}{attributes}{deferred}" } @m ], [ 1, 2, 'd7' ],
    'in buffer order, the deferred trigger\'s last');
is(scalar(keys %{ { map { hdr($_, 'Commit-Key') => 1 } @m } }), 1, 'one commit key');
is_deeply([ map { $_->{msg_id} } @m ], [ map { $_->{body}{id} } @m ], 'Nats-Msg-Id = id');
check_envelope($m[0], subject => 'org.t.prep.yes', attributes => { i => 1 }, name => 'prepared');
is($nats->count(undef, subject => 'org.t.prep.no'), 0, 'ROLLBACK PREPARED: nothing published');

# the documented order: key taken at PREPARE, stream order by COMMIT PREPARED
ok(hdr($m[0], 'Commit-Key') lt hdr($later[0], 'Commit-Key'),
    'the prepared transaction\'s commit key is smaller than the later one\'s');
ok($m[0]{seq} > $later[0]{seq}, 'but it entered the stream after it');
ok($m[0]{body}{timestamp} lt $later[0]{body}{timestamp}, 'its timestamp is the PREPARE\'s, earlier too');

$node->stop;
$nats->stop;
done_testing();
