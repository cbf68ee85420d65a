
# 084_worker_reserved_subjects.pl
#    publish() and emit() refuse a subject NATS keeps for itself at the call
#    (080), but the durable worker publishes what the outbox holds: rows
#    written before that check existed (an older library, events waiting
#    while NATS was down when it was updated) or by the outbox's owner.  A
#    row on "$JS.API.STREAM.PURGE.<stream>" sent as it is purges the stream
#    with the worker's credentials.  The worker refuses such a row for good
#    (state_hub_events.rejected, with why) without sending it, and the
#    events behind it go on in order.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
$nats->create_stream('ACTIVITY_EVENTS', 'org.>');
my $node = she_node('worker_reserved', $nats, preload => 1, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.stream_subjects = '>'
state_hub_events.create_stream = off
state_hub_events.publish_timeout = '2s'
state_hub_events.retry_interval = '300ms'
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{BEGIN; SELECT state_hub_events.publish('org.t.before', jsonb_build_object('n', g))
      FROM generate_series(1, 3) g; COMMIT;});
is($nats->wait_for_count(3), 3, 'three events in the stream');

# Rows as an older library wrote them, between two ordinary events; the
# bodies are what a purge or a delete request takes ({} : everything).
sql(q{
BEGIN;
SELECT state_hub_events.publish('org.t.first');
COMMIT;
INSERT INTO state_hub_events.outbox (seq, id, subject, envelope)
SELECT nextval('state_hub_events.outbox_seq'), gen_random_uuid(), s, '{}'
  FROM unnest(ARRAY['$JS.API.STREAM.PURGE.ACTIVITY_EVENTS', '_INBOX.x.1', '_R_.x.1',
                    '$JS.API.STREAM.DELETE.ACTIVITY_EVENTS']) s;
BEGIN;
SELECT state_hub_events.publish('org.t.after');
COMMIT;
});

my $ok = 0;
for (1 .. 300)
{
    $ok = 1, last if sql(q{SELECT count(*) FROM state_hub_events.outbox}) eq '0';
    usleep(100_000);
}
ok($ok, 'the worker emptied the outbox');
is($nats->wait_for_count(5, subject => 'org.>'), 5, 'the stream holds the five ordinary events');
my $info = $nats->stream_info('ACTIVITY_EVENTS');
is($info->{first_seq}, 1, 'the stream was not purged: its first message is still the first');
is($info->{messages}, 5, 'and it holds five messages, nothing more');
is(sql(q{SELECT string_agg(subject, ',' ORDER BY seq) FROM state_hub_events.rejected}),
    '$JS.API.STREAM.PURGE.ACTIVITY_EVENTS,_INBOX.x.1,_R_.x.1,$JS.API.STREAM.DELETE.ACTIVITY_EVENTS',
    'the four rows are in state_hub_events.rejected, in order');
like(sql(q{SELECT error FROM state_hub_events.rejected ORDER BY seq LIMIT 1}),
    qr/NATS reserves the subject/, 'with why');
is(sql(q{SELECT rejected FROM state_hub_events.stats()}), '4', 'stats() counts them rejected');

$node->stop;
$nats->stop;
done_testing();
