
# 001_publish.pl
#    publish() and emit() end to end against a real nats-server: the
#    envelope, the headers, count and order, JSON types, the stream created
#    on first use, an existing stream left alone, ping(), empty nats_url.

use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('publish', $nats);

# --- stream does not exist yet: ping says it will be created
my $ping = decode_json($node->safe_psql('postgres', 'SELECT state_hub_events.ping()'));
is($ping->{jetstream}, JSON::PP::true, 'ping: JetStream is on');
is($ping->{stream_exists}, JSON::PP::false, 'ping: stream does not exist yet');
is($ping->{will_create}, JSON::PP::true, 'ping: it will be created on first use');
is($nats->stream_info, undef, 'no stream before the first publish');

# --- publish() returns the id; the envelope lands after COMMIT
my $id = $node->safe_psql('postgres',
    q{SELECT state_hub_events.publish('org.statehub.task.stale', '{"task_id": "t1"}')});
like($id, qr/^[0-9a-f-]{36}$/, 'publish() returns a uuid');

my @m = $nats->messages;
is(scalar @m, 1, 'one message in the stream after COMMIT (wait_for_ack waits for it)');
check_envelope($m[0], subject => 'org.statehub.task.stale', attributes => { task_id => 't1' },
    name => 'publish');
is($m[0]{body}{id}, $id, 'the envelope id is the uuid publish() returned');

my $info = $nats->stream_info;
is($info->{storage}, 'file', 'stream created with file storage');
is_deeply($info->{subjects}, ['org.>'], 'stream created with stream_subjects');
is($info->{duplicate_window_s}, 120, 'stream created with a 2 minute duplicate window');

# --- several events in one transaction: buffer order, one shared timestamp
$node->safe_psql('postgres', q{
    BEGIN;
    SELECT state_hub_events.publish('org.statehub.a.one', '{"n": 1}');
    SELECT state_hub_events.publish('org.statehub.a.two', '{"n": 2}');
    SELECT state_hub_events.publish('org.statehub.a.three', NULL);
    COMMIT;
});
@m = $nats->messages;
is(scalar @m, 4, 'three more messages');
is_deeply([ map { $_->{subject} } @m[1..3] ],
    [qw(org.statehub.a.one org.statehub.a.two org.statehub.a.three)], 'in buffer order');
is_deeply($m[3]{body}{attributes}, {}, 'NULL attributes become {}');
is(scalar(keys %{{ map { $_->{body}{timestamp} => 1 } @m[1..3] }}), 1,
    'all events of one transaction share the commit timestamp');

# --- emit(): JSON types as to_jsonb gives them; DELETE sends the old row
$node->safe_psql('postgres', q{
    CREATE TABLE repos (repo_id bigint PRIMARY KEY, repo_slug text, stars numeric,
                        tags text[], meta jsonb, active boolean, created date);
    CREATE TRIGGER repo_registered AFTER INSERT ON repos FOR EACH ROW
      EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.registered', 'repo_id:id', 'repo_slug:slug',
                                             'stars', 'tags', 'meta', 'active', 'created');
    CREATE TRIGGER repo_changed AFTER UPDATE ON repos FOR EACH ROW
      EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.changed', 'repo_id', 'repo_slug');
    CREATE TRIGGER repo_removed AFTER DELETE ON repos FOR EACH ROW
      EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.removed');
});
$node->safe_psql('postgres', q{
    INSERT INTO repos VALUES (1, 'one', 1.50, '{a,b}', '{"x": [1, {"y": null}]}', true, '2026-01-02'),
                             (2, 'two', NULL, NULL, NULL, false, NULL);
});
$node->safe_psql('postgres', q{UPDATE repos SET repo_slug = 'uno' WHERE repo_id = 1});
$node->safe_psql('postgres', q{DELETE FROM repos WHERE repo_id = 2});
@m = $nats->messages(undef, 5);
is(scalar @m, 4, 'two inserts, one update, one delete: four events');
check_envelope($m[0], subject => 'org.statehub.repo.registered', name => 'emit insert',
    attributes => { id => 1, slug => 'one', stars => 1.50, tags => ['a', 'b'],
                    meta => { x => [1, { y => undef }] }, active => JSON::PP::true,
                    created => '2026-01-02' });
like($m[0]{raw}, qr/"stars": 1\.50/, 'numeric keeps its exact text as a JSON number');
like($m[0]{raw}, qr/"id": 1,/, 'bigint is a JSON number');
is_deeply($m[1]{body}{attributes},
    { id => 2, slug => 'two', stars => undef, tags => undef, meta => undef,
      active => JSON::PP::false, created => undef }, 'NULLs are JSON null');
is_deeply($m[2]{body}{attributes}, { repo_id => 1, repo_slug => 'uno' }, 'UPDATE sends the new row');
is($m[3]{subject}, 'org.statehub.repo.removed', 'DELETE event');
is_deeply($m[3]{body}{attributes},
    { repo_id => 2, repo_slug => 'two', stars => undef, tags => undef, meta => undef,
      active => JSON::PP::false, created => undef },
    'DELETE without column specs sends the whole old row');

# --- an existing stream is left alone (its own subjects and window)
$nats->delete_stream;
$nats->create_stream('ACTIVITY_EVENTS', 'org.>', 7);
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.statehub.x.y')});
$info = $nats->stream_info;
is($info->{duplicate_window_s}, 7, 'an existing stream keeps its own duplicate window');
my $p7 = decode_json($node->safe_psql('postgres', 'SELECT state_hub_events.ping()'));
like(join(' ', @{ $p7->{warnings} }), qr/duplicate window \(7 s\) is shorter/, 'ping() warns about the short duplicate window');
is($info->{messages}, 1, 'and receives the event');

# --- create_stream = off: a missing stream is not created; events fail loudly
$nats->delete_stream;
my ($ret, $out, $err) = $node->psql('postgres', q{
    SET state_hub_events.create_stream = off;
    SELECT state_hub_events.publish('org.statehub.x.y');
});
is($ret, 0, 'COMMIT succeeds although the stream is missing');
like($err, qr/WARNING:.*1 of 1 events of the committed transaction were not published/,
    'a WARNING says the event was not published');
is($nats->stream_info, undef, 'create_stream = off creates no stream');

# --- empty nats_url: silent no-op, publish() still validates and returns ids
she_set_conn($node, nats_url => '');
($ret, $out, $err) = $node->psql('postgres', q{
    SELECT state_hub_events.publish('org.statehub.x.y') IS NOT NULL;
    SELECT dropped FROM state_hub_events.stats();
});
is($ret, 0, 'publish with empty nats_url succeeds');
is($err, '', 'and says nothing');
is($out, "t\n1", 'returns an id and counts the event as dropped');
($ret, $out, $err) = $node->psql('postgres', q{
    SELECT state_hub_events.publish('org.statehub.x.*');
});
like($err, qr/wildcard/, 'empty nats_url still validates');
is($nats->stream_info, undef, 'nothing was published (no stream was created)');
like(she_set_conn($node, nats_url => $nats->url), qr/connected to NATS at nats:/,
    'the publisher connects again when nats_url is set at reload');

# --- ping on an existing stream reports its facts
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.statehub.x.y')});
$ping = decode_json($node->safe_psql('postgres', 'SELECT state_hub_events.ping()'));
is($ping->{stream_exists}, JSON::PP::true, 'ping: stream exists');
is($ping->{messages}, 1, 'ping: message count');
is($ping->{duplicate_window_s}, 120, 'ping: duplicate window');
is($ping->{storage}, 'file', 'ping: storage');
is_deeply($ping->{warnings}, [], 'ping: no warnings for the stream the extension created');

# --- the server's max payload, once the publisher knows it, limits the
# envelope at the call (from shared memory, in every backend): an event over
# it is an ERROR at publish(), never a loss at COMMIT
my $small = NatsServer->new(extra_conf => "max_payload: 65536\n")->start;
like(she_set_conn($node, nats_url => $small->url), qr/connected to NATS at nats:/,
    'connected to a server with a 64 KB max payload');
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.payload.first')});
is($small->wait_for_count(1, subject => 'org.t.payload.first'), 1, 'an event reached it (the publisher knows its max payload)');
($ret, $out, $err) = $node->psql('postgres', q{
    SELECT state_hub_events.publish('org.t.payload.big', jsonb_build_object('pad', repeat('x', 80000)));
    SELECT state_hub_events.publish('org.t.payload.after');
}, on_error_stop => 1);
like($err, qr/ERROR:  cannot publish an event of \d+ bytes to subject "org\.t\.payload\.big"/,
    'an event over the server\'s max payload is refused at publish()');
unlike($err, qr/WARNING/, 'no loss reported at COMMIT');
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.payload.fits', jsonb_build_object('pad', repeat('x', 30000)))});
is($small->wait_for_count(1, subject => 'org.t.payload.fits'), 1, 'an event under it is published');
is($small->count(undef, subject => 'org.t.payload.big'), 0, 'the refused event is not in the stream');
$small->stop;

$node->stop;
$nats->stop;
done_testing();
