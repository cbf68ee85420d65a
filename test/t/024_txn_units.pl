
# 024_txn_units.pl
#    Transactions as units: every message carries Statehub-Txn-Id,
#    Statehub-Commit-Key, Statehub-Txn-Index and Statehub-Txn-Count, in
#    immediate and durable mode (savepoint rollbacks, a transaction without
#    an xid, PREPARE / COMMIT PREPARED), the body stays the envelope;
#    atomic_batches falls back (WARNING once) where the stream cannot take
#    atomic batches, and on nats-server 2.12 or later (NATS_SERVER, the
#    version matrix) publishes each transaction as atomic batches, split at
#    atomic_batch_max, with stats() agreeing with the stream.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;
use JSON::PP;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('txn', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.publish_timeout = '5s'
max_prepared_transactions = 5
});

# The messages on subject filter $f, oldest first.
sub msgs
{
    my ($n, $f) = @_;
    return wait_for_messages($nats, $n, undef, subject => $f);
}

sub hdr { my ($m, $k) = @_; return $m->{headers}{"Statehub-$k"}; }

# --- immediate: ids, index, count after a savepoint rollback, LSN keys
my $out = $node->safe_psql('postgres', q{
BEGIN;
SELECT state_hub_events.publish('org.t.txn.a', '{"i": 1}');
SAVEPOINT s;
SELECT state_hub_events.publish('org.t.txn.a', '{"i": 99}');
ROLLBACK TO s;
SELECT state_hub_events.publish('org.t.txn.a', '{"i": 2}');
SELECT state_hub_events.publish('org.t.txn.a', '{"i": 3}');
SELECT 'xid=' || pg_current_xact_id();
COMMIT;
});
my ($xid) = $out =~ /xid=(\d+)/;
my @m = msgs(3, 'org.t.txn.a');
is(scalar @m, 3, 'immediate: the three committed events (the rolled-back one is not sent)');
is_deeply([ map { hdr($_, 'Txn-Id') } @m ], [ $xid, $xid, $xid ], 'Statehub-Txn-Id is pg_current_xact_id()');
is_deeply([ map { hdr($_, 'Txn-Index') } @m ], [ 1, 2, 3 ], 'Statehub-Txn-Index counts from 1 in publish order');
is_deeply([ map { hdr($_, 'Txn-Count') } @m ], [ 3, 3, 3 ], 'Statehub-Txn-Count: the events the transaction committed');
like(hdr($m[0], 'Commit-Key'), qr{^lsn/[0-9A-F]{16}$}, 'immediate: the commit key is the commit LSN, 16 hex digits');
is(scalar(keys %{ { map { hdr($_, 'Commit-Key') => 1 } @m } }), 1, 'one commit key per transaction');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1, 2, 3 ], 'the body stays the envelope');
check_envelope($m[0], attributes => { i => 1 }, name => 'with txn headers');

# the key is the commit record's LSN: after the commit, before the next
my ($lsn_after) = $node->safe_psql('postgres', q{SELECT pg_current_wal_lsn()});
my $key = hex(substr(hdr($m[0], 'Commit-Key'), 4));
my ($hi, $lo) = split m{/}, $lsn_after;
ok($key > 0 && $key <= hex($hi) * 2**32 + hex($lo), 'the commit key is a WAL position up to the current one');

# a read-only transaction that writes nothing gets an xid (and a commit record)
$node->safe_psql('postgres', q{
BEGIN READ ONLY;
SELECT state_hub_events.publish('org.t.txn.ro');
COMMIT;
SELECT state_hub_events.publish('org.t.txn.ro');
});
my @ro = msgs(2, 'org.t.txn.ro');
like(hdr($ro[0], 'Txn-Id'), qr/^\d+$/, 'a transaction without an xid gets one');
isnt(hdr($ro[0], 'Txn-Id'), hdr($ro[1], 'Txn-Id'), 'two transactions, two ids');
ok(substr(hdr($ro[0], 'Commit-Key'), 4) lt substr(hdr($ro[1], 'Commit-Key'), 4),
    'commit keys of successive transactions increase (as strings)');
is(hdr($ro[1], 'Txn-Count'), 1, 'a one-event transaction: count 1');

# --- durable: the outbox sequence as key, PREPARE / COMMIT PREPARED
$node->safe_psql('postgres', q{
SET state_hub_events.delivery = 'durable';
BEGIN;
SELECT state_hub_events.publish('org.t.txn.d', '{"i": 1}');
SELECT state_hub_events.publish('org.t.txn.d', '{"i": 2}');
COMMIT;
});
$out = $node->safe_psql('postgres', q{
SET state_hub_events.delivery = 'durable';
BEGIN;
SELECT state_hub_events.publish('org.t.txn.d', '{"i": 3}');
SELECT 'xid=' || pg_current_xact_id();
PREPARE TRANSACTION 'p1';
COMMIT PREPARED 'p1';
});
my ($pxid) = $out =~ /xid=(\d+)/;
my @d = msgs(3, 'org.t.txn.d');
is(scalar @d, 3, 'durable: three events');
like(hdr($d[0], 'Commit-Key'), qr{^seq/[0-9A-F]{16}$}, 'durable: the commit key is an outbox sequence value');
is(hdr($d[0], 'Commit-Key'), hdr($d[1], 'Commit-Key'), 'durable: one key per transaction');
ok(hdr($d[0], 'Commit-Key') lt hdr($d[2], 'Commit-Key'), 'durable: a later transaction has a larger key');
is_deeply([ map { hdr($_, 'Txn-Index') . '/' . hdr($_, 'Txn-Count') } @d ], [ '1/2', '2/2', '1/1' ],
    'durable: index and count');
is(hdr($d[2], 'Txn-Id'), $pxid, 'COMMIT PREPARED: the prepared transaction\'s id');

# --- atomic_batches where the stream does not allow atomic publish
my $offset = -s $node->logfile;
$node->safe_psql('postgres', q{
ALTER SYSTEM SET state_hub_events.atomic_batches = on;
ALTER SYSTEM SET state_hub_events.atomic_batch_max = 2;
SELECT pg_reload_conf();
});
sub stats
{
    my ($r) = $node->safe_psql('postgres',
        q{SELECT published, failed, unconfirmed, atomic_batches, atomic_splits FROM state_hub_events.stats()});
    return split /\|/, $r;
}
sub commit_txn
{
    my ($subject, $n) = @_;
    my $sql = "BEGIN;\n" . join('', map { "SELECT state_hub_events.publish('$subject', '{\"i\": $_}');\n" } 1 .. $n) . "COMMIT;\n";
    my ($ret, $stdout, $err) = $node->psql('postgres', $sql);
    return $err;
}
my @s0 = stats();
# the reload reaches the publisher at some point: commit until it said so
my $said = wait_until('the fallback WARNING', 60, sub {
    commit_txn('org.t.txn.fb', 3);
    return PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset)
      =~ /atomic_batches is on, but events are published one by one/;
});
ok($said, 'atomic_batches on a stream without allow_atomic: a WARNING says events go one by one');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
is(scalar(() = $log =~ /published one by one/g), 1, 'said once');
my @s1 = stats();
my $fb = $nats->count(undef, subject => 'org.t.txn.fb');
is($s1[0] - $s0[0], $fb, 'fallback: stats() published == what the stream holds');
is($fb % 3, 0, 'fallback: whole transactions stored');
is($s1[3] - $s0[3], 0, 'fallback: no atomic batch counted');

# --- atomic batches (nats-server 2.12 and later)
SKIP:
{
    skip 'atomic batch publish needs nats-server 2.12 or later (this is '
      . join('.', NatsServer->version) . '; run with NATS_SERVER, see test/matrix.sh)', 8
      unless NatsServer->at_least(2, 12);

    diag('atomic batch part: nats-server ' . join('.', NatsServer->version));
    my ($o, $e, $rc) = $nats->allow_atomic;
    is($rc, 0, 'allow_atomic set on the stream') or diag($e);
    $offset = -s $node->logfile;
    # the publisher asks the stream again after a reload
    $node->safe_psql('postgres', 'SELECT pg_reload_conf()');
    my @a0 = stats();
    my $ok = wait_until('an atomic batch', 60, sub {
        commit_txn('org.t.txn.at', 2);
        my @x = stats();
        return $x[3] > $a0[3];
    });
    ok($ok, 'a two-event transaction went as one atomic batch');
    like(PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset), qr/as atomic batches of at most 2 events/,
        'the publisher LOGs that it publishes atomic batches');

    my @b0 = stats();
    my $err = commit_txn('org.t.txn.split', 5);
    is($err, '', 'a five-event transaction commits without a WARNING');
    my @b1 = stats();
    is($b1[4] - $b0[4], 1, 'over atomic_batch_max: one transaction counted split');
    is($b1[3] - $b0[3], 2, 'split into two atomic batches of 2 (and one lone event)');
    my @sp = msgs(5, 'org.t.txn.split');
    is_deeply([ map { hdr($_, 'Txn-Index') } @sp ], [ 1 .. 5 ], 'all five stored, in order');
    like(PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset),
        qr/1 transaction was published as several atomic batches/, 'the split is LOGged');
}

# --- docs/consumers.md's example: reassemble transactions, order by commit key
$node->safe_psql('postgres', q{
BEGIN;
SELECT state_hub_events.publish('org.t.txn.ex', '{"i": 1}');
SELECT state_hub_events.publish('org.t.txn.ex', '{"i": 2}');
COMMIT;
});
$nats->wait_for_count(2, subject => 'org.t.txn.ex');
my $dump = $nats->_run('dump', 'ACTIVITY_EVENTS');
my ($cout, $cerr) = ('', '');
my $example = File::Spec->rel2abs(dirname(__FILE__) . '/../../examples/txn_consumer.py');
IPC::Run::run([ 'python3', $example ], '<', \$dump, '>', \$cout, '2>', \$cerr)
  or diag("txn_consumer.py: $cerr");
my @txns = map { JSON::PP::decode_json($_) } split /\n/, $cout;
my ($ex) = grep { $_->{events}[0]{type} eq 'org.t.txn.ex' } @txns;
ok($ex, 'the example prints the transaction');
is_deeply([ map { $_->{attributes}{i} } @{ $ex->{events} } ], [ 1, 2 ], 'with its two events in order');
is($cerr, '', 'and no incomplete transaction');
my @lsn_keys = grep { m{^lsn/} } map { $_->{commit_key} } @txns;
is_deeply(\@lsn_keys, [ sort @lsn_keys ], 'transactions ordered by commit key');
my $n_txn_msgs = 0;
$n_txn_msgs += scalar @{ $_->{events} } for @txns;
is($n_txn_msgs, $nats->count, 'every message of the stream is in a printed transaction');

# exact accounting over the whole file: stats() == the stream
my @s9 = stats();
is($s9[1] + $s9[2], 0, 'nothing failed or unconfirmed');
is($s9[0], $nats->count, 'stats() published == what the stream holds');

$node->stop;
$nats->stop;
done_testing();
