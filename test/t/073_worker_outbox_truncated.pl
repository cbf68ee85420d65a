
# 073_worker_outbox_truncated.pl
#    The durable worker reads a batch, publishes it and then deletes the
#    acknowledged rows by seq (and moves the refused ones to the dead-letter
#    table).  If meanwhile a superuser TRUNCATEs the outbox and sets its
#    sequence back (TRUNCATE ... RESTART IDENTITY does not: outbox_seq
#    belongs to no column; setval() or a restore does), new events carry the
#    batch's seqs: deleting or moving those would lose them unpublished.
#    The table keeps its relid, so the check of 072 does not see it; the
#    worker compares the table's relfilenode at the read and at the settle,
#    settles nothing when it changed, and reads again.  Every committed
#    event is then in the stream once, none stays in the outbox or moves to
#    the dead-letter table, and stats() counts what happened.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;

# the test owns the stream: an event over 2 kB is refused for good
$nats->create_stream('ACTIVITY_EVENTS', 'org.t.>', 3600, 'max_msg_size=2048');

my $node = she_node('worker_outbox_truncated', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.create_stream = off
state_hub_events.publish_timeout = '60s'
state_hub_events.retry_interval = '300ms'
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

# "published|duplicates|failed|unconfirmed|rejected" from stats()
sub counters
{
    return sql(q{SELECT concat_ws('|', published, duplicates, failed, unconfirmed, rejected)
                   FROM state_hub_events.stats()});
}

ok(wait_until('the worker', 60, sub {
    sql('SELECT worker_pid IS NOT NULL FROM state_hub_events.worker_status()') eq 't' }),
    'the worker runs');
sql(q{SELECT state_hub_events.publish('org.t.warm')});
is($nats->wait_for_count(1, subject => 'org.t.warm', timeout => 60), 1,
    'the worker publishes (its connection is open)');
ok(wait_until('the outbox empties', 60, sub { sql('SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the warm-up event left the outbox');
my $before = counters();
like($before, qr/^1\|0\|0\|0\|0$/, 'stats() counted the warm-up event');

# NATS hangs: the worker reads five events (the third too large for the
# stream) and waits for their acknowledgements
$nats->pause;
my $old_ids = sql(q{
SELECT string_agg(state_hub_events.publish('org.t.old',
           CASE WHEN g = 3 THEN jsonb_build_object('big', repeat('x', 4000))
                ELSE jsonb_build_object('k', g) END)::text, ',' ORDER BY g)
  FROM generate_series(1, 5) g});
my @old = split /,/, $old_ids;
ok(wait_until('the worker read the batch', 60, sub {
    sql('SELECT backlog_events FROM state_hub_events.worker_status()') eq '5' }),
    'the worker read the five events');

# meanwhile: the outbox is emptied, its sequence set back, and sixteen new
# events committed, whose seqs include the batch's
sql(q{TRUNCATE state_hub_events.outbox RESTART IDENTITY});
sql(q{SELECT setval('state_hub_events.outbox_seq', 1, false)});
my $new_ids = sql(q{
SELECT string_agg(state_hub_events.publish('org.t.new', jsonb_build_object('k', g))::text, ',' ORDER BY g)
  FROM generate_series(1, 16) g});
my @new = split /,/, $new_ids;
is(sql(q{SELECT concat_ws('|', count(*), min(seq), max(seq)) FROM state_hub_events.outbox}),
    '16|2|17', 'the new events reuse the old batch\'s seqs (4 to 8)');
$nats->resume;

# every new event is published once: none was deleted or moved as one of
# the old batch
my @msgs = $nats->wait_for_messages(16, subject => 'org.t.new', timeout => 60);
ok(wait_until('the outbox empties', 60, sub { sql('SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the outbox emptied');
@msgs = $nats->messages(undef, undef, subject => 'org.t.new');
my %seen;
$seen{ $_->{msg_id} }++ for @msgs;
is_deeply([ sort keys %seen ], [ sort @new ], 'each new event is in the stream (by Nats-Msg-Id)');
is(scalar @msgs, 16, 'each once');
is(sql('SELECT count(*) FROM state_hub_events.rejected'), '0',
    'no new event was moved to the dead-letter table');

# the old batch: the four that fit were stored, once each; the large one
# was refused and is gone with the TRUNCATE
my @oldmsgs = $nats->messages(undef, undef, subject => 'org.t.old');
is_deeply([ sort map { $_->{msg_id} } @oldmsgs ], [ sort @old[0, 1, 3, 4] ],
    'the old batch: the four events that fit, once each');

# stats(): 1 + 4 + 16 published, the large one refused (failed), nothing
# moved, no duplicate
ok(wait_until('stats() settle', 30, sub { counters() eq '21|0|1|0|0' }),
    'stats() counts 21 published, 1 failed, nothing rejected: ' . counters());
ok($node->log_contains('state_hub_events.outbox was truncated or rewritten while 5 events'),
    'the worker LOGged that it read again');

# a rewrite (VACUUM FULL) while a batch is in flight: a false alarm costs a
# copy that JetStream drops as a duplicate, never an event
$nats->pause;
my $more_ids = sql(q{
SELECT string_agg(state_hub_events.publish('org.t.more', jsonb_build_object('k', g))::text, ',' ORDER BY g)
  FROM generate_series(1, 3) g});
ok(wait_until('the worker read the batch', 60, sub {
    sql('SELECT backlog_events FROM state_hub_events.worker_status()') eq '3' }),
    'the worker read three more events');
sql('VACUUM FULL state_hub_events.outbox');
$nats->resume;
ok(wait_until('the outbox empties', 60, sub { sql('SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the outbox emptied after the rewrite');
is($nats->count(undef, subject => 'org.t.more'), 3, 'each of the three once in the stream');
ok(wait_until('stats() settle', 30, sub { counters() eq '27|3|1|0|0' }),
    'stats(): the three published twice, the copies counted as duplicates (published counts both): ' . counters());

$node->stop;
$nats->stop;
done_testing();
