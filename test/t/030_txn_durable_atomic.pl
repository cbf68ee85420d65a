
# 030_txn_durable_atomic.pl
#    Durable mode with state_hub_events.atomic_batches: the worker creates
#    the stream with atomic publishing allowed (nats-server 2.12 and later;
#    an older server ignores the field and the stream is created as
#    without it), publishes each transaction of the outbox as one atomic
#    batch (split at atomic_batch_max, said in the LOG and stats(); a
#    transaction the read cut off waits for the next read), never
#    stores part of a transaction the stream refuses as a whole (a full
#    stream), and publishes a transaction one event at a time when the
#    server refused its batch without naming the member: an event already
#    stored (the batch "contains duplicate message id"), an event too large
#    (it goes to state_hub_events.rejected).  stats() agrees with the
#    stream exactly.  On a server before 2.12 (the default nats-server; run
#    with NATS_SERVER for the newer one, see test/matrix.sh) it checks the
#    fallback: one event at a time, a WARNING once, the same accounting.
#    Last, the publisher (immediate mode) creates the stream the same way.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $atomic = NatsServer->at_least(2, 12);
diag('nats-server ' . join('.', NatsServer->version) . ($atomic ? ': atomic batches' : ': the fallback'));

my $nats = NatsServer->new->start;
my $node = she_node('txnatomic', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.publish_timeout = '5s'
state_hub_events.retry_interval = '200ms'
state_hub_events.atomic_batches = on
state_hub_events.atomic_batch_max = 3
});

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub hdr { my ($m, $k) = @_; return $m->{headers}{"Statehub-$k"}; }
sub log_since { return PostgreSQL::Test::Utils::slurp_file($node->logfile, $_[0]); }

# stats() as a hash of the columns this test reads
sub stats
{
    my @c = qw(published duplicates failed unconfirmed rejected atomic_batches atomic_splits);
    my @v = split /\|/, sql('SELECT ' . join(', ', @c) . ' FROM state_hub_events.stats()');
    return { map { $c[$_] => $v[$_] } 0 .. $#c };
}
sub delta { my ($a, $b, $k) = @_; return $b->{$k} - $a->{$k}; }

# Commit one transaction of events on $subject with attributes {"i": 1..$n}
# ($big: the index of an event given a 3000-byte attribute).
sub commit_txn
{
    my ($subject, $n, $big) = @_;
    my $sql = "BEGIN;\n";
    for my $i (1 .. $n)
    {
        my $pad = defined $big && $i == $big ? ', "pad": "' . ('x' x 3000) . '"' : '';
        $sql .= "SELECT state_hub_events.publish('$subject', '{\"i\": $i$pad}');\n";
    }
    sql($sql . "COMMIT;\n");
}

sub outbox_empty
{
    return wait_until('an empty outbox', 60,
        sub { sql('SELECT count(*) FROM state_hub_events.outbox') == 0 });
}

# --- the worker creates the stream; on 2.12+ with allow_atomic
my $offset = -s $node->logfile;
commit_txn('org.t.ad.first', 2);
is($nats->wait_for_count(2, subject => 'org.t.ad.first'), 2, 'the worker created the stream and published');
my $ready = wait_until('the worker to judge the stream', 60, sub {
    commit_txn('org.t.ad.first', 2);
    outbox_empty();
    return log_since($offset) =~ /worker: (publishing each transaction's events to stream "ACTIVITY_EVENTS" as atomic batches of at most 3|state_hub_events.atomic_batches is on, but events are published one by one)/;
});
ok($ready, 'the worker says whether it publishes atomic batches');
my $log = log_since($offset);
if ($atomic)
{
    like($log, qr/worker: publishing each transaction's events to stream "ACTIVITY_EVENTS" as atomic batches/,
        'the stream the worker created allows atomic publish');
    unlike($log, qr/published one by one/, 'no fallback WARNING');
}
else
{
    like($log, qr/WARNING:.*worker: state_hub_events.atomic_batches is on, but events are published one by one/,
        'an older server: the stream was created and the worker falls back, with a WARNING');
    like($log, qr/does not allow atomic batch publish/, 'saying why');
}

# --- transactions of 1, 2, 3 and 5 events (atomic_batch_max 3)
outbox_empty();
my $s0 = stats();
commit_txn('org.t.ad.mix', $_) for (1, 2, 3, 5);
$offset = -s $node->logfile;
my @m = wait_for_messages($nats, 11, undef, subject => 'org.t.ad.mix');
outbox_empty();
my $s1 = stats();
is(scalar @m, 11, 'all eleven events stored');
is_deeply([ map { hdr($_, 'Txn-Index') . '/' . hdr($_, 'Txn-Count') } @m ],
    [ '1/1', '1/2', '2/2', '1/3', '2/3', '3/3', '1/5', '2/5', '3/5', '4/5', '5/5' ],
    'in sequence order, each transaction together');
is(delta($s0, $s1, 'published'), 11, 'stats(): eleven published');
is(delta($s0, $s1, 'atomic_batches'), $atomic ? 4 : 0,
    $atomic ? 'four atomic batches: 2, 3, and 3 + 2 of the five' : 'no atomic batch on an older server');
is(delta($s0, $s1, 'atomic_splits'), $atomic ? 1 : 0, 'the five-event transaction counted split');
if ($atomic)
{
    # the server keeps the batch headers: each batch's members share its id
    my @bid = map { $_->{headers}{'Nats-Batch-Id'} // '-' } @m;
    is($bid[0], '-', 'a one-event transaction: a plain message');
    ok($bid[1] ne '-' && $bid[1] eq $bid[2], 'the two-event transaction: one atomic batch')
      or diag("batch ids: @bid");
    ok($bid[3] ne '-' && $bid[3] eq $bid[4] && $bid[4] eq $bid[5], 'the three-event transaction: one atomic batch');
    ok($bid[6] ne '-' && $bid[6] eq $bid[7] && $bid[7] eq $bid[8] && $bid[9] ne '-' && $bid[9] eq $bid[10]
          && $bid[9] ne $bid[6], 'the five-event transaction: a batch of 3, then one of 2');
    ok(wait_until('the split LOG', 30, sub { log_since($offset) =~ /worker: 1 transaction was published as several atomic batches/ }),
        'the split is LOGged');
}

# --- a transaction cut off by the read waits for the next read (whole there)
SKIP:
{
    skip 'needs atomic batches (nats-server 2.12 or later)', 4 unless $atomic;
    sql(q{ALTER SYSTEM SET state_hub_events.worker_batch_bytes = '1kB';
ALTER SYSTEM SET log_min_messages = debug1;
SELECT pg_reload_conf();});
    # rows with envelopes of $len bytes, inserted in one transaction
    my $row = sub {
        my ($txn, $i, $n, $len) = @_;
        my $env = '{"pad": "' . ('x' x ($len - 11)) . '"}';
        return "INSERT INTO state_hub_events.outbox (seq, id, subject, envelope, txn_id, txn_key, txn_index, txn_count)
  VALUES (nextval('state_hub_events.outbox_seq'), gen_random_uuid(), 'org.t.ad.cut', '$env', $txn, 7, $i, $n);\n";
    };
    # two 600-byte rows go in two reads once the worker has the 1kB bound
    $offset = -s $node->logfile;
    my $bound = wait_until('the worker to read at most 1kB', 60, sub {
        sql("BEGIN;\n" . $row->(4000000020, 1, 1, 600) . $row->(4000000021, 1, 1, 600) . "COMMIT;");
        outbox_empty();
        return log_since($offset) =~ /worker: publishing 1 events \(600 bytes\)/;
    });
    ok($bound, 'the worker reads at most worker_batch_bytes');
    my $c0 = stats();
    my $before = $nats->count(undef, subject => 'org.t.ad.cut');
    # a 600-byte one-event transaction, then a three-event one of 300 bytes
    # each: the first read (1kB) holds the first and one event of the second
    sql("BEGIN;\n" . $row->(4000000022, 1, 1, 600)
          . join('', map { $row->(4000000023, $_, 3, 300) } 1 .. 3) . "COMMIT;");
    my @c = wait_for_messages($nats, $before + 4, undef, subject => 'org.t.ad.cut');
    outbox_empty();
    my $c1 = stats();
    my @tail = @c[-3 .. -1];
    my %cb = map { ($_->{headers}{'Nats-Batch-Id'} // '-') => 1 } @tail;
    ok(!$cb{'-'} && keys %cb == 1, 'the three-event transaction went whole, as one atomic batch');
    is(delta($c0, $c1, 'atomic_batches'), 1, 'stats(): one atomic batch');
    is(delta($c0, $c1, 'atomic_splits'), 0, 'stats(): no split');
    sql(q{ALTER SYSTEM RESET state_hub_events.worker_batch_bytes;
ALTER SYSTEM RESET log_min_messages;
SELECT pg_reload_conf();});
}

# --- a stream that has room for one event of a three-event transaction
SKIP:
{
    skip 'needs atomic batches (nats-server 2.12 or later)', 6 unless $atomic;
    my $held = $nats->count;
    $nats->update_stream('ACTIVITY_EVENTS', 'max_msgs=' . ($held + 1), 'discard=new');
    my ($o, $e, $rc) = $nats->allow_atomic;
    is($rc, 0, 'allow_atomic set again after the update') or diag($e);
    my $f0 = stats();
    commit_txn('org.t.ad.full', 3);
    ok(wait_until('two refused attempts', 60, sub { delta($f0, stats(), 'failed') >= 6 }),
        'the worker tried the transaction (refused whole) and tries again');
    is($nats->count, $held, 'a full stream: no event of the transaction stored (never a part)');
    $nats->update_stream('ACTIVITY_EVENTS', 'max_msgs=1000000', 'discard=new');
    $nats->allow_atomic;
    my @f = wait_for_messages($nats, 3, undef, subject => 'org.t.ad.full');
    outbox_empty();
    is(scalar @f, 3, 'with room, the whole transaction is stored');
    my %fb = map { ($_->{headers}{'Nats-Batch-Id'} // '-') => 1 } @f;
    ok(!$fb{'-'} && keys %fb == 1, 'its three events in one atomic batch');
    is(delta($f0, stats(), 'atomic_batches'), 1, 'as one atomic batch');
}

# --- events already stored: the batch is refused (10201), then one by one
my ($txn) = grep { hdr($_, 'Txn-Count') == 2 } @m;
my @pair = grep { hdr($_, 'Txn-Id') eq hdr($txn, 'Txn-Id') } @m;
is(scalar @pair, 2, 'a stored two-event transaction to publish again');
my $held = $nats->count;
my $d0 = stats();
$offset = -s $node->logfile;
# the rows as a stored transaction had them (the envelope does not matter:
# JetStream drops a duplicate by its Nats-Msg-Id)
sql("INSERT INTO state_hub_events.outbox (seq, id, subject, envelope, txn_id, txn_key, txn_index, txn_count)
     SELECT nextval('state_hub_events.outbox_seq'), v.id::uuid, 'org.t.ad.mix', '{}', 4000000001,
            k.key, v.i, 2
       FROM (SELECT nextval('state_hub_events.outbox_seq') AS key) k,
            (VALUES ('$pair[0]{msg_id}', 1), ('$pair[1]{msg_id}', 2)) v(id, i)
      ORDER BY v.i");
ok(outbox_empty(), 'both events acknowledged');
my $d1 = stats();
is($nats->count, $held, 'nothing stored twice');
is(delta($d0, $d1, 'duplicates'), 2, 'stats(): two duplicates');
is(delta($d0, $d1, 'published'), 2, 'stats(): two published (duplicates included)');
if ($atomic)
{
    like(log_since($offset), qr/atomic publish batch contains duplicate message id \(error code 10201\)/,
        'nats-server refuses the batch as a whole (10201), it does not acknowledge a duplicate');
    like(log_since($offset), qr/worker: a transaction was published one event at a time/,
        'then the worker publishes it one event at a time');
}

# one event stored before, one new: one duplicate, one stored
$d0 = $d1;
$offset = -s $node->logfile;
sql("INSERT INTO state_hub_events.outbox (seq, id, subject, envelope, txn_id, txn_key, txn_index, txn_count)
     SELECT nextval('state_hub_events.outbox_seq'), v.id::uuid, 'org.t.ad.mix', '{}', 4000000002,
            k.key, v.i, 2
       FROM (SELECT nextval('state_hub_events.outbox_seq') AS key) k,
            (VALUES ('$pair[0]{msg_id}', 1), (gen_random_uuid()::text, 2)) v(id, i)
      ORDER BY v.i");
ok(outbox_empty(), 'half stored before: both acknowledged');
$d1 = stats();
is($nats->count, $held + 1, 'the new event stored');
is(delta($d0, $d1, 'duplicates'), 1, 'stats(): one duplicate');
is(delta($d0, $d1, 'published'), 2, 'stats(): two published');

# --- an event too large for the stream: to rejected, the others stored
$nats->update_stream('ACTIVITY_EVENTS', 'max_msg_size=2048');
$nats->allow_atomic if $atomic;
$d0 = stats();
$offset = -s $node->logfile;
commit_txn('org.t.ad.big', 3, 2);
my @b = wait_for_messages($nats, 2, undef, subject => 'org.t.ad.big');
outbox_empty();
is_deeply([ map { hdr($_, 'Txn-Index') } @b ], [ 1, 3 ], 'the two events that fit are stored, in order');
is(sql(q{SELECT count(*) FROM state_hub_events.rejected WHERE subject = 'org.t.ad.big'}), 1,
    'the one too large is in state_hub_events.rejected');
is(delta($d0, stats(), 'rejected'), 1, 'stats(): one rejected');
like(log_since($offset), qr/worker: a transaction was published one event at a time/,
    'the refused batch was published one event at a time') if $atomic;

# --- stats() and the stream agree exactly over the whole file
my $s9 = stats();
is($s9->{unconfirmed}, 0, 'nothing unconfirmed');
is($s9->{published} - $s9->{duplicates}, $nats->count, 'stats(): published less duplicates == what the stream holds');

# --- immediate mode: the publisher creates the stream, as the worker did
$nats->delete_stream('ACTIVITY_EVENTS');
is($nats->count, 0, 'the stream is gone');
$offset = -s $node->logfile;
my $i0 = stats();
my $judged = wait_until('the publisher to judge the stream it created', 60, sub {
    sql(q{SET state_hub_events.delivery = 'immediate';
BEGIN;
SELECT state_hub_events.publish('org.t.ad.imm', '{"i": 1}');
SELECT state_hub_events.publish('org.t.ad.imm', '{"i": 2}');
COMMIT;});
    return log_since($offset) =~ /publisher: (?:publishing each transaction's events|state_hub_events.atomic_batches is on, but)/;
});
ok($judged, 'the publisher created the stream and says whether it publishes atomic batches');
if ($atomic)
{
    like(log_since($offset), qr/publisher: publishing each transaction's events to stream "ACTIVITY_EVENTS" as atomic batches/,
        'immediate mode: the stream the publisher created allows atomic publish');
    ok(delta($i0, stats(), 'atomic_batches') >= 1, 'and transactions go as atomic batches');
}
else
{
    like(log_since($offset), qr/publisher: state_hub_events.atomic_batches is on, but events are published one by one/,
        'immediate mode, older server: created as before, events one by one');
}
my $i1 = stats();
is($i1->{published} - $i0->{published}, $nats->count, 'immediate: stats() published == what the new stream holds');
is($nats->count % 2, 0, 'whole transactions');

$node->stop;
$nats->stop;
done_testing();
