
# 025_backfill.pl
#    backfill() against a real nats-server: every row once, in key order,
#    one transaction (and one commit timestamp) per batch, a NOTICE per
#    batch; each envelope's attributes equal to what the table's emit()
#    trigger published for the same row; resuming after an interrupted
#    batch with the key its last NOTICE gave; durable mode; stats() counts
#    exactly the events backfilled.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('backfill', $nats, preload => 1, conf => q{
state_hub_events.database = 'postgres'
});
my $N = 25;

$node->safe_psql('postgres', qq{
    CREATE TABLE items (id int PRIMARY KEY, slug text, n numeric, tags text[],
                        meta jsonb, big text, hidden text);
    CREATE TRIGGER item_added AFTER INSERT ON items FOR EACH ROW
        EXECUTE FUNCTION state_hub_events.emit('org.t.bf.added',
            'id:item_id', 'slug', 'n', 'tags', 'meta', 'big');
    INSERT INTO items
    SELECT i, 'item-' || i, i * 1.5, ARRAY['t' || i], jsonb_build_object('i', i, 'odd', i % 2 = 1),
           NULL, 'not published'
      FROM generate_series(1, $N) i;
});

my $seq = 1;

# The messages that arrived since the last call, once $n of them are there.
sub next_messages
{
    my ($n) = @_;
    my $have = $nats->wait_for_count($seq - 1 + $n);
    is($have, $seq - 1 + $n, "the stream holds $n more messages");
    my @m = $nats->messages(undef, $seq);
    $seq += @m;
    return @m;
}

sub stats
{
    my ($p, $f, $u, $d) = split /\|/, $node->safe_psql('postgres',
        'SELECT published, failed, unconfirmed, dropped FROM state_hub_events.stats()');
    return { published => $p, failed => $f, unconfirmed => $u, dropped => $d };
}

# The NOTICEs of a CALL: [batch, events, total, after] per batch, and the
# summary's total.
sub notices
{
    my ($stderr) = @_;
    my @batches;
    while ($stderr =~ /NOTICE:  backfill of items: batch (\d+) committed \((\d+) events, (\d+) in all\), after => '([^']*)'/g)
    {
        push @batches, [ $1, $2, $3, $4 ];
    }
    my ($done) = $stderr =~ /NOTICE:  backfill of items done \((\d+) events in \d+ batches\)/;
    return (\@batches, $done);
}

# --- the reference: what emit() published for each row
my @emitted = next_messages($N);
my %by_emit = map { $_->{body}{attributes}{item_id} => $_ } @emitted;
is(scalar keys %by_emit, $N, 'emit() published one event per inserted row');

# --- backfill in batches of 7: 7, 7, 7, 4
my $before = stats();
my ($ret, $out, $err) = $node->psql('postgres',
    q{CALL state_hub_events.backfill('items', 'org.t.bf.added', batch_size => 7)});
is($ret, 0, 'backfill() succeeds') or diag($err);
is($out, '{25}', 'it returns the last key');
my ($batches, $done) = notices($err);
is_deeply($batches,
    [ [ 1, 7, 7, '{7}' ], [ 2, 7, 14, '{14}' ], [ 3, 7, 21, '{21}' ], [ 4, 4, 25, '{25}' ] ],
    'a NOTICE per committed batch: its size, the running total, the key to resume after');
is($done, $N, 'and a last NOTICE with the total');

my @m = next_messages($N);
is(scalar @m, $N, "$N events, one per row");
is_deeply([ map { $_->{body}{attributes}{item_id} } @m ], [ 1 .. $N ], 'in primary key order');
is_deeply([ map { $_->{subject} } @m ], [ ('org.t.bf.added') x $N ], 'on the subject given');
my $same = grep { $_->{raw} eq $by_emit{ $_->{body}{attributes}{item_id} }{raw} } @m;
is($same, 0, 'every event is a new one (own id, own timestamp)');
my $equal = grep {
    my $e = $by_emit{ $_->{body}{attributes}{item_id} }{body};
    is_deeply_quiet($_->{body}{attributes}, $e->{attributes})
      && $_->{body}{type} eq $e->{type} && $_->{body}{publisher} eq $e->{publisher}
      && $_->{body}{version} eq $e->{version}
} @m;
is($equal, $N, "each envelope's attributes, type, publisher and version equal emit()'s for the same row");
# the attributes byte for byte: the raw envelope with id and timestamp masked
my $masked = grep {
    mask($_->{raw}) eq mask($by_emit{ $_->{body}{attributes}{item_id} }{raw})
} @m;
is($masked, $N, 'each envelope equals emit()\'s byte for byte but for id and timestamp');
check_envelope($_, subject => 'org.t.bf.added', name => "backfilled #$_->{body}{attributes}{item_id}") for @m[0, -1];
my %ts;
$ts{ $_->{body}{timestamp} }{ int(($_->{body}{attributes}{item_id} - 1) / 7) } = 1 for @m;
is(scalar keys %ts, 4, 'four commit timestamps: one transaction per batch');
ok(!grep({ keys %{ $ts{$_} } != 1 } keys %ts), 'each shared by the events of one batch only');

my $after = stats();
is($after->{published} - $before->{published}, $N, 'stats(): published grew by exactly the events backfilled');
is_deeply([ @$after{qw(failed unconfirmed dropped)} ], [ @$before{qw(failed unconfirmed dropped)} ],
    'stats(): nothing failed, unconfirmed or dropped');

# --- "where": only the rows it selects
($ret, $out, $err) = $node->psql('postgres',
    q{CALL state_hub_events.backfill('items', 'org.t.bf.again', 'meta->>''odd'' = ''true'' AND id > 20 -- odd, late', batch_size => 2)});
is($ret, 0, 'backfill() with a "where" text') or diag($err);
@m = next_messages(3);
is_deeply([ map { $_->{body}{attributes}{item_id} } @m ], [ 21, 23, 25 ], 'only the rows the "where" text selects, in order');
is_deeply([ map { $_->{subject} } @m ], [ ('org.t.bf.again') x 3 ], 'on the re-announcement subject given');

# --- interrupted: a row whose envelope is refused ends the backfill in
# its batch; the batches before are published, that one is not
$node->safe_psql('postgres', q{UPDATE items SET big = repeat('x', 4000) WHERE id = 17});
$before = stats();
($ret, $out, $err) = $node->psql('postgres', q{
    SET state_hub_events.max_event_bytes = '2kB';
    CALL state_hub_events.backfill('items', 'org.t.bf.added', batch_size => 5);
});
isnt($ret, 0, 'a row refused at publish() stops backfill()');
like($err, qr/ERROR:  cannot publish an event of \d+ bytes to subject "org.t.bf.added"/, 'with publish()\'s error') or diag($err);
($batches, $done) = notices($err);
is_deeply([ map { $_->[3] } @$batches ], [ '{5}', '{10}', '{15}' ], 'the NOTICEs of the three committed batches');
is($done, undef, 'no summary');
my $resume = $batches->[-1][3];
@m = next_messages(15);
is_deeply([ map { $_->{body}{attributes}{item_id} } @m ], [ 1 .. 15 ], 'the three committed batches were published');
is($nats->count, $seq - 1, 'and nothing of the interrupted batch');

# resume with the last NOTICE's key, once the cause is fixed
($ret, $out, $err) = $node->psql('postgres',
    qq{CALL state_hub_events.backfill('items', 'org.t.bf.added', batch_size => 5, "after" => '$resume')});
is($ret, 0, 'resuming succeeds') or diag($err);
($batches, $done) = notices($err);
is(scalar @$batches, 2, 'two more batches');
is($done, 10, 'of the ten rows left');
@m = next_messages(10);
is_deeply([ map { $_->{body}{attributes}{item_id} } @m ], [ 16 .. 25 ],
    'resumed after the last committed key: every row exactly once over both runs');
is(length($m[1]{body}{attributes}{big}), 4000, 'the refused row, now within max_event_bytes');
$after = stats();
is($after->{published} - $before->{published}, $N, 'stats(): published grew by exactly the events that arrived');

# --- durable mode
$node->poll_query_until('postgres', 'SELECT worker_pid IS NOT NULL FROM state_hub_events.backlog()');
$before = stats();
($ret, $out, $err) = $node->psql('postgres', q{
    SET state_hub_events.delivery = 'durable';
    CALL state_hub_events.backfill('items', 'org.t.bf.durable', batch_size => 10);
});
is($ret, 0, 'backfill() in durable mode') or diag($err);
($batches, $done) = notices($err);
is_deeply([ map { $_->[1] } @$batches ], [ 10, 10, 5 ], 'durable: a NOTICE per batch');
@m = next_messages($N);
is_deeply([ map { $_->{body}{attributes}{item_id} } @m ], [ 1 .. $N ], 'durable: every row once, in key order');
$equal = grep {
    is_deeply_quiet($_->{body}{attributes}, $by_emit{ $_->{body}{attributes}{item_id} }{body}{attributes})
} grep { $_->{body}{attributes}{item_id} != 17 } @m;
is($equal, $N - 1, 'durable: the attributes emit() gives');
$node->poll_query_until('postgres', 'SELECT events = 0 FROM state_hub_events.backlog()');
$after = stats();
is($after->{published} - $before->{published}, $N, 'durable: stats() published grew by exactly the events backfilled');
is($node->safe_psql('postgres', 'SELECT count(*) FROM state_hub_events.outbox'), 0, 'durable: the outbox is empty');

# Masks the id and timestamp of a raw envelope.
sub mask
{
    my ($raw) = @_;
    $raw =~ s/"id":"[0-9a-f-]{36}"/"id":"-"/;
    $raw =~ s/"timestamp":"[^"]*"/"timestamp":"-"/;
    return $raw;
}

# is_deeply without a test of its own.
sub is_deeply_quiet
{
    my ($a, $b) = @_;
    return JSON::PP->new->canonical->encode($a) eq JSON::PP->new->canonical->encode($b);
}

$node->stop;
$nats->stop;
done_testing();
