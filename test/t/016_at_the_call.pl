
# 016_at_the_call.pl
#    Every refusal happens at the call, never at COMMIT, in durable mode too:
#    a read-only transaction is refused at publish(); a transaction that
#    becomes read-only after its events still commits them; a destination is
#    released when its last event is rolled back; the backlog limit's
#    WARNING and ERROR carry SQLSTATE 54000; and past PostgreSQL's 1 GB
#    allocation limit, both the event array (8,388,609 events) and the
#    outbox write (more than 1 GB of envelopes) work.
#
#    No nats-server: the worker never publishes, so what COMMIT wrote stays
#    in the outbox for the test to read.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use SheTest;

my $node = she_node('call', undef, preload => 1, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
max_prepared_transactions = 2
});
$node->poll_query_until('postgres', 'SELECT worker_pid IS NOT NULL FROM state_hub_events.backlog()');

sub outbox_subjects
{
    return $node->safe_psql('postgres',
        q{SELECT coalesce(string_agg(subject, ',' ORDER BY seq), '') FROM state_hub_events.outbox});
}

# --- a read-only transaction is refused at the call
my ($ret, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
BEGIN READ ONLY;
SELECT state_hub_events.publish('org.t.ro.begin');
COMMIT;
});
like($err, qr/ERROR:  25006: cannot publish durably in a read-only transaction/,
    'BEGIN READ ONLY: durable publish() is refused at the call with 25006');
unlike($err, qr/cannot execute INSERT/, 'and COMMIT does not fail');

($ret, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
SET default_transaction_read_only = on;
SELECT state_hub_events.publish('org.t.ro.default');
});
like($err, qr/ERROR:  25006: cannot publish durably in a read-only transaction/,
    'default_transaction_read_only: refused at the call with 25006');

# --- a transaction that becomes read-only after its events still commits them
($ret, $out, $err) = $node->psql('postgres', q{
BEGIN;
SELECT state_hub_events.publish('org.t.ro.before') IS NOT NULL;
SET TRANSACTION READ ONLY;
COMMIT;
});
is($err, '', 'SET TRANSACTION READ ONLY after the first event: COMMIT succeeds');

($ret, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
BEGIN;
SELECT state_hub_events.publish('org.t.ro.rolledback') IS NOT NULL;
SET TRANSACTION READ ONLY;
SELECT state_hub_events.publish('org.t.ro.after');
COMMIT;
});
like($err, qr/ERROR:  25006: cannot publish durably in a read-only transaction/,
    'a publish() after SET TRANSACTION READ ONLY is refused at the call');

($ret, $out, $err) = $node->psql('postgres', q{
BEGIN;
SELECT state_hub_events.publish('org.t.ro.prepared') IS NOT NULL;
SELECT set_config('transaction_read_only', 'on', true);
PREPARE TRANSACTION 'ro';
COMMIT PREPARED 'ro';
});
is($err, '', 'read-only through set_config(), then PREPARE TRANSACTION: no error');

($ret, $out, $err) = $node->psql('postgres',
    q{SELECT state_hub_events.publish('org.t.ro.implicit') IS NOT NULL \; BEGIN READ ONLY \; COMMIT});
is($err, '', 'an implicit block turned into an explicit read-only one: COMMIT succeeds');

is(outbox_subjects(), 'org.t.ro.before,org.t.ro.prepared,org.t.ro.implicit',
    'the events buffered before the transaction became read-only are in the outbox');

# --- the destination is released with its last event
$node->safe_psql('postgres', 'DELETE FROM state_hub_events.outbox');
($ret, $out, $err) = $node->psql('postgres', q{
BEGIN;
SAVEPOINT s;
SET LOCAL state_hub_events.delivery = 'immediate';
SELECT state_hub_events.publish('org.t.dest.immediate') IS NOT NULL;
ROLLBACK TO s;
SELECT state_hub_events.publish('org.t.dest.durable') IS NOT NULL;
COMMIT;
});
is($err, '', 'immediate delivery fixed in a rolled-back savepoint: a later durable publish() is accepted');
is(outbox_subjects(), 'org.t.dest.durable', 'and lands in the outbox');

# --- the backlog limit: its WARNING and its ERROR carry 54000
$node->append_conf('postgresql.conf', qq{state_hub_events.max_backlog_events = 1
state_hub_events.backlog_overflow = 'accept'
});
$node->reload;
$node->poll_query_until('postgres', q{
    SELECT current_setting('state_hub_events.backlog_overflow') = 'accept'
       AND backlog_events >= 1 FROM state_hub_events.worker_status()});
($ret, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
SELECT state_hub_events.publish('org.t.backlog.accepted') IS NOT NULL;
});
like($err, qr/WARNING:  54000: state_hub_events: the durable backlog holds/,
    "backlog_overflow = 'accept': the WARNING has SQLSTATE 54000");
$node->append_conf('postgresql.conf', qq{state_hub_events.backlog_overflow = 'error'\n});
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('state_hub_events.backlog_overflow') = 'error'});
($ret, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
SELECT state_hub_events.publish('org.t.backlog.refused') IS NOT NULL;
});
like($err, qr/ERROR:  54000: cannot accept the event: the durable backlog holds/,
    "backlog_overflow = 'error': refused at the call with 54000");
$node->append_conf('postgresql.conf', qq{state_hub_events.max_backlog_events = 0\n});
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('state_hub_events.max_backlog_events') = '0'});
$node->safe_psql('postgres', 'DELETE FROM state_hub_events.outbox');

# --- past the 1 GB allocation limit
SKIP:
{
    # The backend holds the transaction's events in memory: ~3 GB for
    # 8,388,609 small events, ~1.2 GB for 1.1 GB of envelopes (and the
    # worker reads ~1 GB of them back).
    my $avail_kb;
    if (open(my $fh, '<', '/proc/meminfo'))
    {
        while (<$fh>) { $avail_kb = $1 if /^MemAvailable:\s+(\d+)/; }
        close $fh;
    }
    skip "needs about 5 GB of available memory, this machine has "
      . int(($avail_kb // 0) / 1024) . " MB", 5
      if !defined $avail_kb || $avail_kb < 5 * 1024 * 1024;

    # durable: more than 1 GB of envelopes in one transaction (the outbox
    # write goes in chunks; one array of them passes MaxAllocSize)
    my $lz4 = $node->safe_psql('postgres', q{
        SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'});
    # (both transactions pass the default max_transaction_bytes, 1GB)
    ($ret, $out, $err) = $node->psql('postgres', ($lz4 eq 't' ? "SET default_toast_compression = lz4;\n" : '') . q{
SET state_hub_events.max_transaction_bytes = '4GB';
BEGIN;
CREATE TEMP TABLE ids AS
    SELECT i, state_hub_events.publish('org.t.big',
                  jsonb_build_object('i', i, 'pad', repeat('x', 1000000))) AS id
      FROM generate_series(1, 1100) i;
COMMIT;
SELECT count(*), sum(octet_length(envelope)) > 1073741823,
       (SELECT array_agg(id ORDER BY seq) FROM state_hub_events.outbox)
         = (SELECT array_agg(id ORDER BY i) FROM ids)
  FROM state_hub_events.outbox;
});
    is($err, '', 'durable: COMMIT of more than 1 GB of envelopes succeeds');
    is($out, '1100|t|t', 'all 1,100 rows are in the outbox, in publish order');
    $node->safe_psql('postgres', 'DELETE FROM state_hub_events.outbox');

    # immediate (no URL: counted as dropped): 8,388,609 events, where the
    # event array's doubling used to pass MaxAllocSize; one more is refused
    # at the call with 54000
    ($ret, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
SET state_hub_events.delivery = 'immediate';
SET state_hub_events.max_events_per_transaction = 8388609;
SET state_hub_events.max_transaction_bytes = '4GB';
SELECT dropped AS before FROM state_hub_events.stats() \gset
BEGIN;
SELECT count(state_hub_events.publish('org.t.many')) FROM generate_series(1, 8388609);
SAVEPOINT s;
SELECT state_hub_events.publish('org.t.many');
ROLLBACK TO s;
COMMIT;
SELECT dropped - :before FROM state_hub_events.stats();
}, on_error_stop => 0);
    like($err, qr/ERROR:  54000: cannot buffer more than 8388609 events in one transaction$/m,
        'the 8,388,610th event is refused at the call with 54000');
    unlike($err, qr/invalid memory alloc request size/, 'no allocation error on the way');
    is($out, "8388609\n8388609", '8,388,609 events buffered and handled at COMMIT');
}

$node->stop;
done_testing();
