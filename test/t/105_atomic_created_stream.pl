
# 105_atomic_created_stream.pl
#    atomic_batches on, and the stream does not exist yet: the publisher
#    (immediate mode) or the worker (durable mode) asks whether the stream
#    allows atomic batches, gets no answer (there is no stream), creates it
#    with allow_atomic and publishes that first transaction one event at a
#    time.  The README promises "the group or batch that created it goes
#    one event at a time, the next ones as atomic batches": a transaction
#    committed right after must arrive as one atomic batch (Nats-Batch-Id
#    the id of its last event, Nats-Batch-Sequence 1..n, Nats-Batch-Commit
#    on the last), with its transaction headers.  Before the fix, the
#    unanswered question was asked again only a second later, so every
#    transaction of that second went one event at a time.  The atomic path
#    needs nats-server 2.12 or later (NATS_SERVER, the version matrix); an
#    older server checks that the same transactions arrive whole, one by
#    one, with their headers.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $atomic = NatsServer->at_least(2, 12);

my $nats = NatsServer->new->start;
my $node = she_node('atomiccreated', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.publish_timeout = '5s'
state_hub_events.atomic_batches = on
});

sub hdr { my ($m, $k) = @_; return $m->{headers}{$k}; }

# check_txn($what, @msgs): one transaction of 3 events, as an atomic batch
# on 2.12+, one by one before
sub check_txn
{
    my ($what, @m) = @_;
    is(scalar @m, 3, "$what: three events");
    is_deeply([ map { hdr($_, 'Statehub-Txn-Index') . '/' . hdr($_, 'Statehub-Txn-Count') } @m ],
        [ '1/3', '2/3', '3/3' ], "$what: index and count");
    is(scalar(keys %{ { map { hdr($_, 'Statehub-Txn-Id') => 1 } @m } }), 1, "$what: one transaction id");
    is_deeply([ map { hdr($_, 'Nats-Msg-Id') } @m ], [ map { $_->{body}{id} } @m ], "$what: Nats-Msg-Id = id");
    if ($atomic)
    {
        is_deeply([ map { hdr($_, 'Nats-Batch-Id') // 'none' } @m ], [ ($m[2]{body}{id}) x 3 ],
            "$what: one atomic batch, named by its last event");
        is_deeply([ map { hdr($_, 'Nats-Batch-Sequence') // 'none' } @m ], [ 1, 2, 3 ],
            "$what: Nats-Batch-Sequence 1..3");
        is_deeply([ map { defined hdr($_, 'Nats-Batch-Commit') ? 1 : 0 } @m ], [ 0, 0, 1 ],
            "$what: Nats-Batch-Commit on the last");
    }
    else
    {
        is_deeply([ map { hdr($_, 'Nats-Batch-Id') // 'none' } @m ], [ ('none') x 3 ],
            "$what: one by one (nats-server " . join('.', NatsServer->version) . ')');
    }
}

my $three = q{BEGIN;
SELECT state_hub_events.publish('%s', jsonb_build_object('i', i)) FROM generate_series(1, 3) i;
COMMIT;};

# --- immediate: the first transaction creates stream IMM, the next one
# follows at once in the same session
$node->safe_psql('postgres', q{
SET state_hub_events.stream = 'IMM';
SET state_hub_events.stream_subjects = 'imm.>';
SELECT state_hub_events.publish('imm.first');
} . sprintf($three, 'imm.next'));
my @m = $nats->wait_for_messages(3, stream => 'IMM', subject => 'imm.next', timeout => 30);
check_txn('immediate, the transaction after the stream was created', @m);

# --- durable: the worker creates ACTIVITY_EVENTS with the first event;
# the next transaction commits as soon as that event is stored
$node->safe_psql('postgres', q{
SET state_hub_events.delivery = 'durable';
SELECT state_hub_events.publish('org.t.first');
});
$nats->wait_for_count(1, subject => 'org.t.first', timeout => 30);
$node->safe_psql('postgres', q{SET state_hub_events.delivery = 'durable';} . sprintf($three, 'org.t.next'));
@m = $nats->wait_for_messages(3, subject => 'org.t.next', timeout => 30);
check_txn('durable, the transaction after the stream was created', @m);

my ($failed) = $node->safe_psql('postgres', 'SELECT failed + unconfirmed FROM state_hub_events.stats()');
is($failed, 0, 'nothing failed or unconfirmed');

$node->stop;
$nats->stop;
done_testing();
