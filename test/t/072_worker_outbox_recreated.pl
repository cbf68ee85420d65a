# 072_worker_outbox_recreated.pl
#    The durable worker reads a batch, publishes it and then deletes its
#    rows by seq.  If meanwhile the outbox was emptied on purpose, the
#    extension dropped and created again, and new events committed, the
#    new outbox's seqs start again: deleting the batch's seqs there would
#    lose new events that were never published.  The worker checks that
#    the outbox it settles is the one it read.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('worker_outbox_recreated', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.publish_timeout = '60s'
});

$node->safe_psql('postgres', q{
CREATE TABLE public.items (id int);
CREATE TRIGGER items_new AFTER INSERT ON public.items FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.old');
});
ok(wait_until('the worker', 60, sub {
    $node->safe_psql('postgres', 'SELECT worker_pid IS NOT NULL FROM state_hub_events.worker_status()') eq 't' }),
    'the worker runs');

# NATS hangs: the worker reads the batch and waits for its acknowledgements
kill 'STOP', $nats->{pid};
$node->safe_psql('postgres', 'INSERT INTO public.items SELECT g FROM generate_series(1, 5) g');
ok(wait_until('the worker read the batch', 60, sub {
    $node->safe_psql('postgres', 'SELECT backlog_events FROM state_hub_events.worker_status()') eq '5' }),
    'the worker read the five events');

# meanwhile: the outbox is emptied on purpose, the extension made again,
# and sixteen new events committed (seqs from 1 again)
$node->safe_psql('postgres', q{
TRUNCATE state_hub_events.outbox;
DROP EXTENSION state_hub_events CASCADE;
CREATE EXTENSION state_hub_events;
CREATE TRIGGER items_new AFTER INSERT ON public.items FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.new');
INSERT INTO public.items SELECT g FROM generate_series(1, 16) g;
});
kill 'CONT', $nats->{pid};

# every new event is published: none was deleted as one of the old batch
my @msgs = wait_for_messages($nats, 16, 'ACTIVITY_EVENTS', subject => 'org.t.new');
is(scalar @msgs, 16, 'all sixteen new events were published');
ok(wait_until('the outbox empties', 60, sub {
    $node->safe_psql('postgres', 'SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'and the outbox emptied');
is($nats->count('ACTIVITY_EVENTS', subject => 'org.t.new'), 16, 'exactly sixteen');

$node->stop;
$nats->stop;
done_testing();
