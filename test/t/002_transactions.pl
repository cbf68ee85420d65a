
# 002_transactions.pl
#    Transaction semantics, read back from a real stream: nothing before the
#    commit record, nothing for ROLLBACK, errors or failed COMMITs; exactly
#    the surviving events of savepoints and exception blocks; deferred
#    triggers; COMMIT AND CHAIN and procedures publish at each commit;
#    autocommit; a large batch in order; hot standby refuses.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('xact', $nats, streaming => 1, conf => "max_prepared_transactions = 5\n");

sub subjects_since
{
    my ($from) = @_;
    return [ map { $_->{subject} } $nats->messages(undef, $from) ];
}

sub next_seq { return $nats->last_seq + 1; }

# Create the stream up front so every test reads from a known sequence.
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.setup')});

# --- nothing leaves before COMMIT; everything right after it
my $s = next_seq();
my $bg = $node->background_psql('postgres');
$bg->query_safe(q{BEGIN});
$bg->query_safe(q{SELECT state_hub_events.publish('org.t.open')});
is_deeply(subjects_since($s), [], 'nothing in the stream while the transaction is open');
$bg->query_safe(q{COMMIT});
is_deeply(subjects_since($s), ['org.t.open'], 'the event is in the stream when COMMIT returns');

# --- COMMIT AND CHAIN: each transaction publishes at its own commit
$s = next_seq();
$bg->query_safe(q{BEGIN});
$bg->query_safe(q{SELECT state_hub_events.publish('org.t.chain1')});
$bg->query_safe(q{COMMIT AND CHAIN});
is_deeply(subjects_since($s), ['org.t.chain1'], 'COMMIT AND CHAIN publishes the first transaction');
$bg->query_safe(q{SELECT state_hub_events.publish('org.t.chain2')});
is_deeply(subjects_since($s), ['org.t.chain1'], 'the chained transaction is not published yet');
$bg->query_safe(q{ROLLBACK AND CHAIN});
$bg->query_safe(q{SELECT state_hub_events.publish('org.t.chain3')});
$bg->query_safe(q{COMMIT});
is_deeply(subjects_since($s), [qw(org.t.chain1 org.t.chain3)], 'the rolled-back link of the chain published nothing');
$bg->quit;

# --- ROLLBACK and errors publish nothing
$s = next_seq();
$node->safe_psql('postgres', q{BEGIN; SELECT state_hub_events.publish('org.t.rolledback'); ROLLBACK;});
$node->psql('postgres', q{BEGIN; SELECT state_hub_events.publish('org.t.error'); SELECT 1/0; COMMIT;});
$node->psql('postgres', q{SELECT state_hub_events.publish('org.t.autocommit_error'), 1/0;});
$node->psql('postgres', q{BEGIN; SELECT state_hub_events.publish('org.t.before_bad'); SELECT state_hub_events.publish('org.t.bad*'); COMMIT;});
is_deeply(subjects_since($s), [], 'ROLLBACK, errors and a refused event publish nothing of their transaction');

# --- a failed COMMIT publishes nothing: deferred constraint violation
$node->safe_psql('postgres', q{
    CREATE TABLE parent (id int PRIMARY KEY);
    CREATE TABLE child (id int PRIMARY KEY,
        parent_id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);
    CREATE TRIGGER child_added AFTER INSERT ON child FOR EACH ROW
        EXECUTE FUNCTION state_hub_events.emit('org.t.child.added', 'id', 'parent_id');
});
my ($ret, $out, $err) = $node->psql('postgres', q{
    BEGIN;
    INSERT INTO child VALUES (1, 42);
    SELECT state_hub_events.publish('org.t.deferred_fail');
    COMMIT;
});
like($err, qr/violates foreign key constraint/, 'COMMIT failed on the deferred constraint');
is_deeply(subjects_since($s), [], 'a COMMIT failing on a deferred constraint publishes nothing');

# --- a failed COMMIT publishes nothing: serialization failure at commit
$node->safe_psql('postgres', q{
    CREATE TABLE ssi (k int PRIMARY KEY, v int);
    INSERT INTO ssi VALUES (1, 0), (2, 0);
});
my $a = $node->background_psql('postgres', on_error_stop => 0);
my $b = $node->background_psql('postgres', on_error_stop => 0);
$a->query_safe(q{BEGIN ISOLATION LEVEL SERIALIZABLE});
$b->query_safe(q{BEGIN ISOLATION LEVEL SERIALIZABLE});
$a->query_safe(q{SELECT sum(v) FROM ssi});
$b->query_safe(q{SELECT sum(v) FROM ssi});
$a->query_safe(q{UPDATE ssi SET v = v + 1 WHERE k = 1});
$b->query_safe(q{UPDATE ssi SET v = v + 1 WHERE k = 2});
$a->query_safe(q{SELECT state_hub_events.publish('org.t.ssi_a')});
$b->query_safe(q{SELECT state_hub_events.publish('org.t.ssi_b')});
$a->query_safe(q{COMMIT});
my $res = $b->query(q{COMMIT});
like($b->{stderr}, qr/could not serialize access/, 'the second COMMIT failed with a serialization failure');
$a->quit;
$b->quit;
is_deeply(subjects_since($s), ['org.t.ssi_a'], 'only the transaction that committed published');

# --- savepoints and PL/pgSQL exception blocks
$s = next_seq();
$node->safe_psql('postgres', q{
    BEGIN;
    SELECT state_hub_events.publish('org.t.sp.a');
    SAVEPOINT s1;
    SELECT state_hub_events.publish('org.t.sp.b');
    SAVEPOINT s2;
    SELECT state_hub_events.publish('org.t.sp.c');
    ROLLBACK TO s2;
    RELEASE s1;
    SAVEPOINT s3;
    SELECT state_hub_events.publish('org.t.sp.d');
    ROLLBACK TO s3;
    SELECT state_hub_events.publish('org.t.sp.e');
    COMMIT;
});
$node->safe_psql('postgres', q{
    DO $$
    BEGIN
        PERFORM state_hub_events.publish('org.t.exc.before');
        BEGIN
            PERFORM state_hub_events.publish('org.t.exc.lost');
            RAISE EXCEPTION 'boom';
        EXCEPTION WHEN OTHERS THEN
            PERFORM state_hub_events.publish('org.t.exc.handler');
        END;
    END $$;
});
is_deeply(subjects_since($s),
    [qw(org.t.sp.a org.t.sp.b org.t.sp.e org.t.exc.before org.t.exc.handler)],
    'rolled-back savepoints and exception blocks drop exactly their events');

# --- deferred triggers firing at COMMIT count
$s = next_seq();
$node->safe_psql('postgres', q{
    CREATE TABLE d (id int);
    CREATE CONSTRAINT TRIGGER d_added AFTER INSERT ON d DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION state_hub_events.emit('org.t.deferred.added', 'id');
    BEGIN;
    INSERT INTO d VALUES (7);
    COMMIT;
});
my @m = $nats->messages(undef, $s);
is(scalar @m, 1, 'the deferred trigger published');
is_deeply($m[0]{body}{attributes}, { id => 7 }, 'with its attributes');

# --- a procedure that commits and rolls back inside
$s = next_seq();
$node->safe_psql('postgres', q{
    CREATE PROCEDURE p() LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM state_hub_events.publish('org.t.proc.1');
        COMMIT;
        PERFORM state_hub_events.publish('org.t.proc.2');
        ROLLBACK;
        PERFORM state_hub_events.publish('org.t.proc.3');
        COMMIT;
        PERFORM state_hub_events.publish('org.t.proc.4');
    END $$;
    CALL p();
});
is_deeply(subjects_since($s), [qw(org.t.proc.1 org.t.proc.3 org.t.proc.4)],
    'a procedure publishes at each COMMIT, nothing of what it rolled back');

# --- PREPARE TRANSACTION with events is refused; without events it works
($ret, $out, $err) = $node->psql('postgres', q{
    BEGIN; SELECT state_hub_events.publish('org.t.prepared'); PREPARE TRANSACTION 'x';
});
like($err, qr/cannot PREPARE a transaction that has published events/, 'PREPARE with events is refused');
$node->safe_psql('postgres', q{BEGIN; INSERT INTO parent VALUES (8); PREPARE TRANSACTION 'y'; COMMIT PREPARED 'y';});
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0', 'no prepared transaction left');

# --- a large transaction: every event, in order, in one batch
$s = next_seq();
$node->safe_psql('postgres', q{
    SELECT count(state_hub_events.publish('org.t.bulk', jsonb_build_object('i', i)))
      FROM generate_series(1, 20000) i;
});
@m = $nats->messages(undef, $s);
is(scalar @m, 20000, '20,000 events of one transaction all arrived');
my $in_order = 1;
for my $i (0 .. $#m)
{
    $in_order = 0, last if $m[$i]{body}{attributes}{i} != $i + 1;
}
ok($in_order, 'in buffer order');
my %ids = map { $_->{msg_id} => 1 } @m;
is(scalar keys %ids, 20000, 'with 20,000 distinct ids');

# how long COMMIT spent, for the record (not an assertion: benchmarks live in bench/)
my $one = $node->safe_psql('postgres', q{
    SELECT state_hub_events.publish('org.t.one') IS NULL;
    SELECT state_hub_events.publish('org.t.two') IS NULL;
    SELECT round(commit_publish_p50_ms::numeric, 3) FROM state_hub_events.stats();
});
$one =~ s/.*\n//s;
note("single-event commit publish time, p50 of two commits (the first connects): $one ms");

# --- hot standby: publish() is refused with a clear error
$node->backup('bk');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'bk', has_streaming => 1);
$standby->start;
$node->wait_for_catchup($standby);
($ret, $out, $err) = $standby->psql('postgres', q{SELECT state_hub_events.publish('org.t.standby')});
like($err, qr/cannot publish events during recovery/, 'publish() on a hot standby is refused');
$standby->stop;

$node->stop;
$nats->stop;
done_testing();
