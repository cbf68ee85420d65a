
# 022_durable_rejected.pl
#    Durable delivery when the stream refuses: an event refused for good
#    (over the stream's max_msg_size, captured by another stream, no
#    permission to publish its subject) moves to state_hub_events.rejected
#    and the events behind it go on, in order; requeue_rejected() puts it
#    back once the cause is fixed.  A refusal that may pass later (a full
#    stream) holds the outbox at that event: the retry publishes it alone,
#    so later events never overtake it.  A server stopped in the middle of a
#    batch leaves the stream in sequence order of first appearance.
#    Batches are bounded by worker_batch_bytes.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use NatsServer;
use SheTest;

# the worker publishes as "hub", which may not publish to org.t.deny.>;
# the test tools read as "admin"
my $nats = NatsServer->new(user => 'admin', password => 'adminpw', auth_conf => q{
authorization {
  users = [
    { user: admin, password: adminpw }
    { user: hub, password: hubpw, permissions: { publish: { deny: ["org.t.deny.>"] } } }
  ]
}
})->start;
my $hub_url = 'nats://hub:hubpw@127.0.0.1:' . $nats->port;

# the test owns the streams: ACTIVITY_EVENTS captures org.t.>, OTHER org.x.>
$nats->create_stream('ACTIVITY_EVENTS', 'org.t.>', 3600, 'max_msg_size=2048');
$nats->create_stream('OTHER', 'org.x.>', 3600);

my $node = she_node('rejected', $nats, preload => 1, conf => qq{
state_hub_events.nats_url = '$hub_url'
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.create_stream = off
state_hub_events.publish_timeout = '1s'
state_hub_events.connect_timeout = '1s'
state_hub_events.retry_interval = '300ms'
state_hub_events.worker_batch_bytes = '64kB'
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Poll $query until it returns 't' (30 s at most); returns whether it did.
sub wait_true
{
    my ($query) = @_;
    for (1 .. 300)
    {
        return 1 if sql($query) eq 't';
        usleep(100_000);
    }
    return 0;
}

# The messages of the stream on subjects matching $filter, once it holds
# at least $n of them (its state polled, 60 s at most).
sub stream_messages
{
    my ($n, $filter) = @_;
    return $nats->wait_for_messages($n, subject => $filter, timeout => 60);
}

# Each id at its first appearance, in stream order.
sub first_appearances
{
    my %seen;
    return grep { !$seen{ $_->{msg_id} }++ } @_;
}

# "published|duplicates|rejected|failed|unconfirmed" from stats()
sub counters
{
    return sql(q{SELECT published || '|' || duplicates || '|' || rejected || '|' || failed
                        || '|' || unconfirmed FROM state_hub_events.stats()});
}

ok(wait_true('SELECT worker_pid IS NOT NULL FROM state_hub_events.backlog()'), 'the worker runs');

# --- refused for good: over max_msg_size, and captured by another stream
sql('SELECT state_hub_events.stats_reset()');
my $offset = -s $node->logfile;
sql(q{
    BEGIN;
    SELECT count(state_hub_events.publish('org.t.p.small', jsonb_build_object('i', i))) FROM generate_series(1, 5) i;
    SELECT state_hub_events.publish('org.t.p.big', jsonb_build_object('i', 6, 'pad', repeat('x', 4000)));
    SELECT state_hub_events.publish('org.x.elsewhere', jsonb_build_object('i', 7));
    SELECT count(state_hub_events.publish('org.t.p.small', jsonb_build_object('i', i))) FROM generate_series(8, 10) i;
    COMMIT;
});
ok(wait_true('SELECT events = 0 FROM state_hub_events.backlog()'), 'the backlog drains past the refused events');
my @m = stream_messages(8, 'org.t.p.*');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1 .. 5, 8 .. 10 ],
    'the events behind them are stored, in order');
is(sql(q{SELECT string_agg(subject || ' ' || coalesce(error_code::text, '-') || ' ' || (envelope::jsonb->'attributes'->>'i'), ', ' ORDER BY seq)
           FROM state_hub_events.rejected}),
    'org.t.p.big 10054 6, org.x.elsewhere 10060 7',
    'both refused events are in state_hub_events.rejected with JetStream\'s error code');
like(sql(q{SELECT error FROM state_hub_events.rejected WHERE subject = 'org.t.p.big'}),
    qr/message size exceeds maximum allowed/, 'and its error text');
is(sql(q{SELECT count(*) FROM state_hub_events.rejected r
          WHERE r.seq < (SELECT max(seq) FROM state_hub_events.rejected) AND r.rejected_at IS NOT NULL}),
    1, 'each with its sequence value and the time it was moved');
my $big_id = sql(q{SELECT id FROM state_hub_events.rejected WHERE subject = 'org.t.p.big'});
my $log = slurp_file($node->logfile, $offset);
like($log, qr/LOG:  state_hub_events worker: event \Q$big_id\E \(seq \d+, subject "org\.t\.p\.big"\) was refused for good and moved to state_hub_events\.rejected\n.*DETAIL:  .*message size exceeds maximum allowed \(error code 10054\)/,
    'a LOG line names the event and quotes the server');
like($log, qr/subject "org\.x\.elsewhere"\) was refused for good.*\n.*DETAIL:  .*expected stream does not match/,
    'and one for the event captured by another stream');
is(counters(), '8|0|2|0|0', 'stats(): 8 published, 2 rejected, nothing failed');
is($nats->stream_info->{messages}, 8, 'exactly what the stream holds');
is($nats->stream_info('OTHER')->{messages}, 0, 'nothing landed in the other stream');
is(sql('SELECT rejected FROM state_hub_events.backlog()'), 2, 'backlog() counts the dead letters');
like(sql('SELECT last_error FROM state_hub_events.backlog()'), qr/refused a message/,
    'and shows the refusal as its last error');

# --- no permission to publish the subject
sql(q{
    BEGIN;
    SELECT state_hub_events.publish('org.t.q', '{"i": 1}');
    SELECT state_hub_events.publish('org.t.deny.x', '{"i": 2}');
    SELECT state_hub_events.publish('org.t.q', '{"i": 3}');
    COMMIT;
});
ok(wait_true(q{SELECT count(*) = 1 FROM state_hub_events.rejected WHERE subject = 'org.t.deny.x'}),
    'an event on a subject the user may not publish to moves to rejected');
like(sql(q{SELECT coalesce(error_code::text, 'null') || ' ' || error FROM state_hub_events.rejected WHERE subject = 'org.t.deny.x'}),
    qr/^null .*Permissions Violation for Publish to "org\.t\.deny\.x"/, 'with the server\'s words and no JetStream code');
ok(wait_true('SELECT events = 0 FROM state_hub_events.backlog()'), 'the backlog drains');
@m = stream_messages(2, 'org.t.q');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1, 3 ], 'the events around it are stored, in order');
is(counters(), '10|0|3|0|0', 'stats() agree');

# --- over the server's max payload: lowered after the event was committed
$nats->stop;
sql(q{
    BEGIN;
    SELECT state_hub_events.publish('org.t.m', '{"i": 1}');
    SELECT state_hub_events.publish('org.t.m', jsonb_build_object('i', 2, 'pad', repeat('x', 70000)));
    SELECT state_hub_events.publish('org.t.m', '{"i": 3}');
    COMMIT;
});
$nats->{extra_conf} = "max_payload: 65536\n";
$nats->_write_config;
$nats->start;
ok(wait_true(q{SELECT count(*) = 1 FROM state_hub_events.rejected WHERE subject = 'org.t.m'}),
    'an event over the server\'s max payload moves to rejected');
like(sql(q{SELECT coalesce(error_code::text, 'null') || ' ' || error FROM state_hub_events.rejected WHERE subject = 'org.t.m'}),
    qr/^null .*exceeds the server's max payload/, 'refused by the client, before sending');
ok(wait_true('SELECT events = 0 FROM state_hub_events.backlog()'), 'the backlog drains');
@m = stream_messages(2, 'org.t.m');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1, 3 ], 'the events around it are stored, in order');
my (undef, undef, $rejected) = split /\|/, counters();
is($rejected, 4, 'stats() count it');

# --- requeue: refused again while the cause stays, stored once it is fixed
my $old_seq = sql(q{SELECT seq FROM state_hub_events.rejected WHERE subject = 'org.t.p.big'});
is(sql(qq{SELECT state_hub_events.requeue_rejected(ARRAY['$big_id'::uuid])}), 1, 'requeue_rejected() returns how many it put back');
ok(wait_true(qq{SELECT count(*) = 1 FROM state_hub_events.rejected WHERE id = '$big_id' AND seq > $old_seq}),
    'with the cause unchanged the event is refused again, with a new sequence value');
is(sql(qq{SELECT error FROM state_hub_events.rejected WHERE id = '$big_id'}),
    'JetStream refused a message: message size exceeds maximum allowed (error code 10054)',
    'with the same error whether it was published in a batch or alone');
ok(wait_true('SELECT events = 0 FROM state_hub_events.backlog()'), 'and the backlog drains');
$nats->update_stream('ACTIVITY_EVENTS', 'max_msg_size=1048576');
sql(q{SELECT state_hub_events.publish('org.t.p.small', '{"i": 11}')});
is(sql('SELECT state_hub_events.requeue_rejected()'), 4, 'after raising max_msg_size, requeue them all');
ok(wait_true('SELECT events = 0 AND rejected = 3 FROM state_hub_events.backlog()'),
    'the outbox drains; the other three are refused again');
@m = stream_messages(10, 'org.t.p.*');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1 .. 5, 8 .. 10, 11, 6 ],
    'the requeued event arrives, after the events that were waiting');
is($m[-1]{msg_id}, $big_id, 'with its own id');
like(counters(), qr/^14\|0\|8\|/, 'stats(): 14 published, each move to rejected counted once');
sql('TRUNCATE state_hub_events.rejected');

# --- a refusal that may pass later holds the outbox: nothing overtakes it
$nats->purge;
$nats->update_stream('ACTIVITY_EVENTS', 'max_bytes=4096', 'discard=new');
sql('SELECT state_hub_events.stats_reset()');
$offset = -s $node->logfile;
sql(q{
    BEGIN;
    SELECT state_hub_events.publish('org.t.o', '{"i": 1}');
    SELECT state_hub_events.publish('org.t.o', '{"i": 2}');
    SELECT state_hub_events.publish('org.t.o', jsonb_build_object('i', 3, 'pad', repeat('x', 5000)));
    COMMIT;
});
$node->wait_for_log(qr/state_hub_events worker: 1 of 3 events not acknowledged, retrying from seq \d+/, $offset);
like(slurp_file($node->logfile, $offset), qr/DETAIL:  JetStream refused a message: maximum bytes exceeded/,
    'a full stream (discard new) refuses the large event: the worker retries from it');
sql(q{SELECT count(state_hub_events.publish('org.t.o', jsonb_build_object('i', i))) FROM generate_series(4, 5) i});
# two more attempts (each counts its one event as failed)
my $failed = sql('SELECT failed FROM state_hub_events.stats()');
ok(wait_true("SELECT failed >= $failed + 2 FROM state_hub_events.stats()"), 'the worker keeps retrying');
@m = $nats->messages(undef, undef, subject => 'org.t.o');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1, 2 ],
    'events committed after the refused one are not published ahead of it');
is(sql('SELECT events FROM state_hub_events.backlog()'), 3, 'they wait behind it');
$nats->update_stream('ACTIVITY_EVENTS', 'max_bytes=-1');
@m = stream_messages(5, 'org.t.o');
is_deeply([ map { $_->{body}{attributes}{i} } first_appearances(@m) ], [ 1 .. 5 ],
    'once the stream has room: sequence order');
ok(wait_true('SELECT events = 0 FROM state_hub_events.backlog()'), 'the backlog drains');

# the events sent in the same batch behind a refused one: stored ahead of
# it (the one exception the README states), logged, never more
$nats->purge;
$nats->update_stream('ACTIVITY_EVENTS', 'max_bytes=4096');
sql('SELECT state_hub_events.stats_reset()');
$offset = -s $node->logfile;
sql(q{
    BEGIN;
    SELECT state_hub_events.publish('org.t.r', '{"i": 1}');
    SELECT state_hub_events.publish('org.t.r', jsonb_build_object('i', 2, 'pad', repeat('x', 5000)));
    SELECT state_hub_events.publish('org.t.r', '{"i": 3}');
    COMMIT;
});
$node->wait_for_log(qr/state_hub_events worker: 1 event behind event [0-9a-f-]+ \(seq \d+\) was stored ahead of it/, $offset);
sql(q{SELECT state_hub_events.publish('org.t.r', '{"i": 4}')});
$failed = sql('SELECT failed FROM state_hub_events.stats()');
ok(wait_true("SELECT failed >= $failed + 2 FROM state_hub_events.stats()"), 'the worker keeps retrying');
@m = $nats->messages(undef, undef, subject => 'org.t.r');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1, 3 ],
    'the event behind it in the same batch was stored ahead of it, the later one was not');
$nats->update_stream('ACTIVITY_EVENTS', 'max_bytes=-1');
@m = stream_messages(4, 'org.t.r');
is_deeply([ map { $_->{body}{attributes}{i} } first_appearances(@m) ], [ 1, 3, 2, 4 ],
    'then the refused one, then the later one');
ok(wait_true('SELECT events = 0 FROM state_hub_events.backlog()'), 'the backlog drains');
my ($pub, $dup) = split /\|/, counters();
is($pub - $dup, $nats->count(undef, subject => 'org.t.r'),
    'stats(): published less duplicates is what the stream holds');

# --- batches are bounded by bytes: NATS down, 30 events of about 10 kB
$nats->stop;
$offset = -s $node->logfile;
sql(q{SELECT count(state_hub_events.publish('org.t.b', jsonb_build_object('i', i, 'pad', repeat('x', 10000))))
        FROM generate_series(1, 30) i});
my @sizes = split /\n/, sql('SELECT octet_length(envelope) FROM state_hub_events.outbox ORDER BY seq');
my ($k, $sum) = (0, 0);
while ($k < @sizes && ($k == 0 || $sum + $sizes[$k] <= 64 * 1024))
{
    $sum += $sizes[$k++];
}
cmp_ok($k, '<', 30, "64 kB hold $k of these events");
$node->wait_for_log(qr/state_hub_events worker: \d+ of \d+ events not acknowledged/, $offset);
like(slurp_file($node->logfile, $offset), qr/state_hub_events worker: $k of $k events not acknowledged/,
    'the first attempt read one batch of worker_batch_bytes');
$nats->start;
@m = stream_messages(30, 'org.t.b');
is_deeply([ map { $_->{body}{attributes}{i} } first_appearances(@m) ], [ 1 .. 30 ],
    'once NATS is back all 30 arrive, in order');
ok(wait_true('SELECT events = 0 FROM state_hub_events.backlog()'), 'the backlog drains');

# --- a server stopped in the middle of a batch
$nats->purge;
sql('SELECT state_hub_events.stats_reset()');
$nats->pause;
$offset = -s $node->logfile;
sql(q{SELECT count(state_hub_events.publish('org.t.s', jsonb_build_object('i', i))) FROM generate_series(1, 2000) i});
$node->wait_for_log(qr/state_hub_events worker: \d+ of \d+ events not acknowledged/, $offset);
$nats->stop;    # resumes it: it reads part of what was sent, then stops
$nats->start;
@m = stream_messages(2000, 'org.t.s');
my @first = first_appearances(@m);
is(scalar @first, 2000, 'after the server stopped in the middle of a batch, all 2000 events arrived');
is(scalar @m, 2000, 'each once');
is_deeply([ map { $_->{body}{attributes}{i} } @first ], [ 1 .. 2000 ], 'in sequence order');
ok(wait_true('SELECT events = 0 FROM state_hub_events.backlog()'), 'the backlog drains');

# --- a database still at 1.1 has no dead-letter table: the refused event
# waits at the head of the outbox, the LOG says to update, and the update
# lets it move
$nats->update_stream('ACTIVITY_EVENTS', 'max_msg_size=2048');
sql(q{DROP EXTENSION state_hub_events; CREATE EXTENSION state_hub_events VERSION '1.1'});
$offset = -s $node->logfile;
sql(q{SELECT state_hub_events.publish('org.t.u', jsonb_build_object('i', 1, 'pad', repeat('x', 4000)))});
$node->wait_for_log(qr/event [0-9a-f-]+ \(seq 1\) was refused for good, and there is no table state_hub_events\.rejected to move it to/, $offset);
sql(q{SELECT state_hub_events.publish('org.t.u', '{"i": 2}')});
$failed = sql('SELECT failed FROM state_hub_events.stats()');
ok(wait_true("SELECT failed >= $failed + 2 FROM state_hub_events.stats()"), 'at 1.1 the worker keeps retrying the refused event');
is(sql('SELECT count(*) FROM state_hub_events.outbox'), 2, 'which stays in the outbox, with the event behind it');
is($nats->count(undef, subject => 'org.t.u'), 0, 'and nothing is published ahead of it');
sql('ALTER EXTENSION state_hub_events UPDATE');
ok(wait_true(q{SELECT count(*) = 1 FROM state_hub_events.rejected WHERE subject = 'org.t.u'}),
    'after ALTER EXTENSION UPDATE it moves to rejected');
@m = stream_messages(1, 'org.t.u');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [2], 'and the event behind it is published');

$node->stop;
$nats->stop;
done_testing();
