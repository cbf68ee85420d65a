
# 032_atomic_poison_immediate.pl
#    Immediate mode with state_hub_events.atomic_batches: a transaction of
#    three events, one of them over the stream's max_msg_size (but under the
#    server's max payload, so publish() takes it).  nats-server refuses the
#    atomic batch as a whole without naming the member; the publisher then
#    publishes the transaction's events again one at a time, so only the
#    event too large is refused: the COMMIT's WARNING counts 1 of 3, stats()
#    counts 1 failed and 2 published, the stream holds the other two (their
#    ids, their transaction headers), and the LOG says the batch was refused
#    and published again one event at a time (stats() atomic_splits + 1).
#    The same for an event on a subject the publisher may not publish to
#    (the server drops that member: the batch is "incomplete").
#    The atomic path needs nats-server 2.12 or later (NATS_SERVER, see
#    test/matrix.sh); an older server checks the same accounting on the
#    one-by-one fallback.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $atomic = NatsServer->at_least(2, 12);
diag('nats-server ' . join('.', NatsServer->version) . ($atomic ? ': atomic batches' : ': the fallback'));

# the publisher connects as "hub", which may not publish to org.t.ap.deny.>;
# the test tools connect as "admin"
my $nats = NatsServer->new(user => 'admin', password => 'adminpw', auth_conf => q{
authorization {
  users = [
    { user: admin, password: adminpw }
    { user: hub, password: hubpw, permissions: { publish: { deny: ["org.t.ap.deny.>"] } } }
  ]
}
})->start;
my $hub_url = 'nats://hub:hubpw@127.0.0.1:' . $nats->port;
my $node = she_node('atomicpoison', $nats, conf => qq{
state_hub_events.nats_url = '$hub_url'
state_hub_events.publish_timeout = '5s'
state_hub_events.wait_for_ack = on
state_hub_events.atomic_batches = on
state_hub_events.atomic_batch_max = 10
});

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub hdr { my ($m, $k) = @_; return $m->{headers}{"Statehub-$k"}; }
sub log_since { return PostgreSQL::Test::Utils::slurp_file($node->logfile, $_[0]); }
sub stats
{
    my @c = qw(published duplicates failed unconfirmed atomic_batches atomic_splits);
    my @v = split /\|/, sql('SELECT ' . join(', ', @c) . ' FROM state_hub_events.stats()');
    return { map { $c[$_] => $v[$_] } 0 .. $#c };
}
sub delta { my ($a, $b, $k) = @_; return $b->{$k} - $a->{$k}; }

# Commit one transaction of $n events on $subject ($big: the index of an
# event given a 3000-byte attribute; $deny: the index of an event on
# org.t.ap.deny.x).  Returns (stderr, [ids], xid).
sub commit_txn
{
    my ($subject, $n, $big, $deny) = @_;
    my $sql = "BEGIN;\n";
    for my $i (1 .. $n)
    {
        my $pad = defined $big && $i == $big ? ', "pad": "' . ('x' x 3000) . '"' : '';
        my $subj = defined $deny && $i == $deny ? 'org.t.ap.deny.x' : $subject;
        $sql .= "SELECT 'id=' || state_hub_events.publish('$subj', '{\"i\": $i$pad}');\n";
    }
    $sql .= "SELECT 'xid=' || pg_current_xact_id();\nCOMMIT;\n";
    my ($out, $err) = ('', '');
    $node->psql('postgres', $sql, stdout => \$out, stderr => \$err);
    my @ids = $out =~ /id=([0-9a-f-]{36})/g;
    my ($xid) = $out =~ /xid=(\d+)/;
    return ($err, \@ids, $xid);
}

# --- the publisher creates the stream (allow_atomic on 2.12+) and judges it
my $offset = -s $node->logfile;
my $judged = wait_until('the publisher to judge the stream', 60, sub {
    commit_txn('org.t.ap.warm', 2);
    return log_since($offset) =~ /publisher: (?:publishing each transaction's events to stream "ACTIVITY_EVENTS" as atomic batches|state_hub_events.atomic_batches is on, but)/;
});
ok($judged, 'the publisher created the stream and judged it');

# a stream that takes at most 2 kB per message; the server's max payload is 1 MB
$nats->update_stream('ACTIVITY_EVENTS', 'max_msg_size=2048');
if ($atomic)
{
    my ($o, $e, $rc) = $nats->allow_atomic;
    is($rc, 0, 'allow_atomic set again after the update') or diag($e);
}
my $w0 = stats();
my ($werr) = commit_txn('org.t.ap.warm', 2);
is($werr, '', 'a transaction that fits: no WARNING');
is(delta($w0, stats(), 'atomic_batches'), $atomic ? 1 : 0,
    $atomic ? 'it went as one atomic batch: the publisher still publishes atomic batches'
    : 'an older server: one by one');

# --- the poison transaction: three events, the second too large for the stream
my $s0 = stats();
my $held = $nats->count;
$offset = -s $node->logfile;
my ($err, $ids, $xid) = commit_txn('org.t.ap.big', 3, 2);
my $s1 = stats();
is(scalar @$ids, 3, 'publish() took all three events (under the server\'s max payload)');
like($err, qr/WARNING:  state_hub_events: 1 of 3 events of the committed transaction were not published/,
    'the COMMIT is warned about exactly one lost event');
like($err, qr/DETAIL:  .*(?:10054|exceeds maximum|too large|maximum)/i,
    'the WARNING gives the refusal of the event too large')
  or diag($err);
unlike($err, qr/not confirmed/, 'nothing unconfirmed');
is(delta($s0, $s1, 'failed'), 1, 'stats(): one failed');
is(delta($s0, $s1, 'published'), 2, 'stats(): two published');
is(delta($s0, $s1, 'duplicates'), 0, 'stats(): no duplicate');
is(delta($s0, $s1, 'unconfirmed'), 0, 'stats(): nothing unconfirmed');

my @m = wait_for_messages($nats, 2, undef, subject => 'org.t.ap.big');
is($nats->count, $held + 2, 'the stream gained exactly the two events that fit');
is_deeply([ map { $_->{msg_id} } @m ], [ $ids->[0], $ids->[2] ], 'events 1 and 3, by their ids, in order');
is_deeply([ map { hdr($_, 'Txn-Index') . '/' . hdr($_, 'Txn-Count') } @m ], [ '1/3', '3/3' ],
    'with their transaction headers (index/count)');
is_deeply([ map { hdr($_, 'Txn-Id') } @m ], [ $xid, $xid ], 'and the transaction\'s id');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1, 3 ], 'their bodies');

if ($atomic)
{
    is(delta($s0, $s1, 'atomic_splits'), 1, 'stats(): the transaction counted in atomic_splits');
    is(delta($s0, $s1, 'atomic_batches'), 0, 'stats(): no atomic batch committed');
    ok(!defined $m[0]{headers}{'Nats-Batch-Id'} && !defined $m[1]{headers}{'Nats-Batch-Id'},
        'the two were stored as plain messages, one at a time');
    my $log = log_since($offset);
    my @said = $log =~ /(LOG:  state_hub_events publisher: JetStream refused the atomic batch[^\n]*)/g;
    is(scalar @said, 1, 'one LOG line says the atomic batch was refused')
      or diag($log);
    like($said[0] // '', qr/published again one event at a time/, 'and published again one event at a time');
    like($said[0] // '', qr/error code \d+/, 'with the server\'s error');
}
else
{
    is(delta($s0, $s1, 'atomic_splits'), 0, 'an older server: no split counted');
    unlike(log_since($offset), qr/refused an atomic batch/, 'and no atomic refusal LOGged');
}

# --- an event on a subject the publisher may not publish to (no JetStream code)
my $p0 = stats();
$held = $nats->count;
$offset = -s $node->logfile;
($err, $ids, $xid) = commit_txn('org.t.ap.perm', 3, undef, 2);
my $p1 = stats();
like($err, qr/WARNING:  state_hub_events: 1 of 3 events of the committed transaction were not published/,
    'no permission for one event: the COMMIT is warned about exactly one lost event');
like($err, qr/DETAIL:  .*Permissions Violation for Publish to "org\.t\.ap\.deny\.x"/,
    'with the server\'s words') or diag($err);
is(delta($p0, $p1, 'failed'), 1, 'stats(): one failed');
is(delta($p0, $p1, 'published'), 2, 'stats(): two published');
is(delta($p0, $p1, 'unconfirmed'), 0, 'stats(): nothing unconfirmed');
my @p = wait_for_messages($nats, 2, undef, subject => 'org.t.ap.perm');
is($nats->count, $held + 2, 'the stream gained exactly the two others');
is_deeply([ map { $_->{msg_id} } @p ], [ $ids->[0], $ids->[2] ], 'events 1 and 3, by their ids');
is_deeply([ map { hdr($_, 'Txn-Index') . '/' . hdr($_, 'Txn-Count') . '/' . hdr($_, 'Txn-Id') } @p ],
    [ "1/3/$xid", "3/3/$xid" ], 'with their transaction headers');
if ($atomic)
{
    is(delta($p0, $p1, 'atomic_splits'), 1, 'stats(): counted in atomic_splits');
    like(log_since($offset), qr/publisher: JetStream refused the atomic batch of 1 transaction \(/,
        'the refused batch is LOGged');
}

# --- the next transaction goes as an atomic batch again
my $n0 = stats();
($err) = commit_txn('org.t.ap.after', 3);
is($err, '', 'a transaction that fits after it: no WARNING');
is(delta($n0, stats(), 'atomic_batches'), $atomic ? 1 : 0,
    $atomic ? 'as one atomic batch' : 'one by one on an older server');

# --- a transaction split at atomic_batch_max, the poison in its first batch:
# that batch goes again one event at a time, the second stays one batch, and
# atomic_splits counts the transaction once
SKIP:
{
    skip 'needs atomic batches (nats-server 2.12 or later)', 8 unless $atomic;
    sql(q{ALTER SYSTEM SET state_hub_events.atomic_batch_max = 2; SELECT pg_reload_conf();});
    my $r0 = stats();
    my $reloaded = wait_until('the publisher to split at 2', 60, sub {
        commit_txn('org.t.ap.reload', 3);
        return delta($r0, stats(), 'atomic_splits') > 0;
    });
    ok($reloaded, 'the publisher splits at the new atomic_batch_max');
    my $t0 = stats();
    $held = $nats->count;
    ($err, $ids, $xid) = commit_txn('org.t.ap.split', 4, 2);
    my $t1 = stats();
    like($err, qr/WARNING:  state_hub_events: 1 of 4 events of the committed transaction were not published/,
        'split and refused: the COMMIT is warned about exactly one lost event');
    is(delta($t0, $t1, 'failed') . '/' . delta($t0, $t1, 'published'), '1/3', 'stats(): one failed, three published');
    is(delta($t0, $t1, 'atomic_batches'), 1, 'stats(): the second batch (events 3 and 4) committed');
    is(delta($t0, $t1, 'atomic_splits'), 1, 'stats(): the transaction counted in atomic_splits once');
    my @t = wait_for_messages($nats, 3, undef, subject => 'org.t.ap.split');
    is($nats->count, $held + 3, 'the stream gained exactly the three others');
    # event 1 went again after the batch behind it was stored: compare as sets
    is_deeply([ sort map { $_->{msg_id} } @t ], [ sort @$ids[0, 2, 3] ], 'events 1, 3 and 4, by their ids');
    my %bid = map { hdr($_, 'Txn-Index') => ($_->{headers}{'Nats-Batch-Id'} // '-') } @t;
    ok($bid{1} eq '-' && $bid{3} ne '-' && $bid{3} eq $bid{4},
        'event 1 alone, events 3 and 4 as one atomic batch') or diag(explain(\%bid));
}

# exact accounting over the whole file: stats() == the stream
my $s9 = stats();
is($s9->{unconfirmed}, 0, 'nothing unconfirmed');
is($s9->{published} - $s9->{duplicates}, $nats->count, 'stats(): published less duplicates == what the stream holds');
is($s9->{failed}, $atomic ? 3 : 2, 'stats(): the events too large and the one without permission are the only ones lost');

$node->stop;
$nats->stop;
done_testing();
