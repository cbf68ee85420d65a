
# 087_worker_outbox_deleted.pl
#    As 073, but the outbox is emptied with DELETE, which keeps the table's
#    file (relfilenode), so the check of 073 does not see it.  While the
#    durable worker waits for the acknowledgements of a batch (NATS hung),
#    a superuser deletes the outbox's rows and sets its sequence back; new
#    events then carry the batch's seqs.  Settling the old batch by seq
#    alone deleted the new events whose seqs it had acknowledged (lost,
#    never published) and moved the one whose seq it had refused to the
#    dead-letter table.  The worker deletes and moves a row only when its
#    seq and its id are the batch's: every new event is in the stream once,
#    none in the dead-letter table, and stats() counts what happened.

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

my $node = she_node('worker_outbox_deleted', $nats, conf => q{
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
like(counters(), qr/^1\|0\|0\|0\|0$/, 'stats() counted the warm-up event');

# NATS hangs: the worker reads five events (the third too large for the
# stream) and waits for their acknowledgements
$nats->pause;
my $old_ids = sql(q{
SELECT string_agg(state_hub_events.publish('org.t.old',
           CASE WHEN g = 3 THEN jsonb_build_object('big', repeat('x', 4000))
                ELSE jsonb_build_object('k', g) END)::text, ',' ORDER BY g)
  FROM generate_series(1, 5) g});
my @old = split /,/, $old_ids;
my $old_seqs = sql(q{SELECT string_agg(seq::text, ',' ORDER BY seq) FROM state_hub_events.outbox});
ok(wait_until('the worker read the batch', 60, sub {
    sql('SELECT backlog_events FROM state_hub_events.worker_status()') eq '5' }),
    'the worker read the five events');

# meanwhile: the outbox's rows are deleted (its file stays), its sequence
# set back, and sixteen new events committed, whose seqs include the batch's
sql(q{DELETE FROM state_hub_events.outbox});
sql(q{SELECT setval('state_hub_events.outbox_seq', 1, false)});
my $new_ids = sql(q{
SELECT string_agg(state_hub_events.publish('org.t.new', jsonb_build_object('k', g))::text, ',' ORDER BY g)
  FROM generate_series(1, 16) g});
my @new = split /,/, $new_ids;
my $reused = sql(qq{SELECT count(*) FROM state_hub_events.outbox WHERE seq IN ($old_seqs)});
is($reused, '5', "the new events reuse the old batch's seqs ($old_seqs)");
$nats->resume;

# the old batch is settled: four acknowledged, one refused for good
ok(wait_until('the old batch is settled', 60, sub {
    $nats->count(undef, subject => 'org.t.old') == 4 }),
    'the old batch: the four events that fit were stored');

# every new event is published once: none was deleted or moved as one of
# the old batch
ok(wait_until('the outbox empties', 60, sub { sql('SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the outbox emptied');
is(sql('SELECT count(*) FROM state_hub_events.rejected'), '0',
    'no new event was moved to the dead-letter table');
my @msgs = $nats->wait_for_messages(16, subject => 'org.t.new', timeout => 30);
@msgs = $nats->messages(undef, undef, subject => 'org.t.new');
my %seen;
$seen{ $_->{msg_id} }++ for @msgs;
is_deeply([ sort keys %seen ], [ sort @new ], 'each new event is in the stream (by Nats-Msg-Id)');
is(scalar @msgs, 16, 'each once');
my @oldmsgs = $nats->messages(undef, undef, subject => 'org.t.old');
is_deeply([ sort map { $_->{msg_id} } @oldmsgs ], [ sort @old[0, 1, 3, 4] ],
    'the old batch: the four events that fit, once each');

# stats(): 1 + 4 + 16 published, the large one refused (failed, its row
# gone with the DELETE: nothing moved), no duplicate
ok(wait_until('stats() settle', 30, sub { counters() eq '21|0|1|0|0' }),
    'stats() counts 21 published, 1 failed, nothing rejected: ' . counters());
ok(!$node->log_contains('moved to state_hub_events.rejected'),
    'no LOG line says an event was moved to the dead-letter table');

$node->stop;
$nats->stop;
done_testing();
