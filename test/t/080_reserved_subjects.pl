# 080_reserved_subjects.pl
#    A message on a subject NATS keeps for itself is a request the server
#    runs with the publisher's credentials: "$JS.API.STREAM.PURGE.<stream>"
#    with the envelope as its body purges the stream.  With stream_subjects
#    '>' (which covers them), a role allowed to publish, but nothing more,
#    must still be refused at the call, by publish() and by an emit()
#    trigger, and the stream keeps its messages.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
$nats->create_stream('ACTIVITY_EVENTS', 'org.>');
my $node = she_node('reserved', $nats, conf => q{
state_hub_events.stream_subjects = '>'
state_hub_events.create_stream = off
});

$node->safe_psql('postgres', q{
CREATE ROLE pub LOGIN;
GRANT USAGE ON SCHEMA state_hub_events TO pub;
GRANT EXECUTE ON FUNCTION state_hub_events.publish(text, jsonb) TO pub;
CREATE TABLE t (id int);
GRANT INSERT ON t TO pub;
});

# three events in the stream to begin with
$node->safe_psql('postgres',
    q{SELECT state_hub_events.publish('org.t.before', jsonb_build_object('n', g)) FROM generate_series(1, 3) g});
is($nats->wait_for_count(3), 3, 'three events in the stream');

for my $subject ('$JS.API.STREAM.PURGE.ACTIVITY_EVENTS', '$JS.API.STREAM.DELETE.ACTIVITY_EVENTS',
    '$JS.ACK.ACTIVITY_EVENTS.c.1.1.1.1.0', '$SYS.REQ.SERVER.PING', '_INBOX.x.1', '_R_.x.1', '_GR_.abcdef.ghijkl._INBOX.x')
{
    my ($ret, $out, $err) = $node->psql('postgres',
        "\\set VERBOSITY verbose\nSET ROLE pub;\nSELECT state_hub_events.publish('$subject');");
    like($err, qr/ERROR:  22023: cannot publish to subject "\Q$subject\E": NATS reserves it/,
        "publish('$subject') is refused at the call");
    unlike($err, qr/WARNING/, "... and nothing reached COMMIT for $subject");
}

# an emit() trigger cannot name one either (checked at CREATE TRIGGER)
my ($ret, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
CREATE TRIGGER t_purge AFTER INSERT ON t FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('$JS.API.STREAM.PURGE.ACTIVITY_EVENTS');});
like($err, qr/ERROR:  22023: cannot publish to subject "\$JS\.API\.STREAM\.PURGE\.ACTIVITY_EVENTS": NATS reserves it/,
    'an emit() trigger on a reserved subject is refused at CREATE TRIGGER');

# the stream still holds what it had: one more event makes four
$node->safe_psql('postgres', q{SET ROLE pub; SELECT state_hub_events.publish('org.t.after')});
is($nats->wait_for_count(4), 4, 'the stream was not purged: four events');
is($nats->stream_info('ACTIVITY_EVENTS')->{first_seq}, 1, 'its first message is still the first');

$node->stop;
done_testing();
