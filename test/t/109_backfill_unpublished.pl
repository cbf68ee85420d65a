
# 109_backfill_unpublished.pl
#    backfill() in immediate mode stops at the first batch whose events
#    NATS did not take (lost or unconfirmed: its COMMIT's WARNING), with an
#    ERROR (08006) whose hint names the "after" to resume from, the key
#    before that batch; before, it went on batch after batch, losing each,
#    and ended "done".  Resumed with that key once NATS is back, every row
#    is announced.  Durable mode is not stopped: the outbox keeps the
#    batches until NATS is back.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('bfunpub', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.publish_timeout = '1s'
state_hub_events.retry_interval = '200ms'
});

$node->safe_psql('postgres', q{
CREATE TABLE items (id int PRIMARY KEY, v text);
INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 10) i;
CREATE TRIGGER items_emit AFTER INSERT ON items FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.bf.items', 'id');
SELECT state_hub_events.publish('org.t.bf.warm');
});
$nats->wait_for_count(1, subject => 'org.t.bf.warm', timeout => 30);

sub backfill
{
    my ($mode, $after) = @_;
    my ($out, $err) = ('', '');
    $node->psql('postgres', qq{\\set VERBOSITY verbose
SET state_hub_events.delivery = '$mode';
CALL state_hub_events.backfill('items', 'org.t.bf.$mode', batch_size => 3} . ($after ? qq{, "after" => '$after'} : '') . ');',
        stdout => \$out, stderr => \$err);
    return $err;
}

# --- immediate, NATS down: stopped after the first batch, resumable from the start
$nats->stop;
my $err = backfill('immediate');
like($err, qr/ERROR:  08006: backfill of items: 3 of the 3 events of batch 1 were not published/,
    'immediate, NATS down: the backfill stops at the first batch not published');
like($err, qr/HINT:  Once NATS takes events again, CALL backfill\(\) again without "after"/,
    'the hint says where to resume');
unlike($err, qr/batch 2|done/, 'no second batch was committed');
$err = backfill('immediate', '{3}');
like($err, qr/HINT:  Once NATS takes events again, CALL backfill\(\) again with "after" => '\{3\}'/,
    'resumed after a key: the hint names the key before the batch not published');

$nats->start;
my $up = wait_until('NATS to take events again', 60, sub {
    my ($ret, $o, $e) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.bf.probe')});
    return $ret == 0 && $e eq '';
});
ok($up, 'NATS is back');
$err = backfill('immediate');
like($err, qr/backfill of items done \(10 events in 4 batches\)/, 'resumed from the start: every row');
my @m = $nats->wait_for_messages(10, subject => 'org.t.bf.immediate', timeout => 30);
is_deeply([ map { $_->{body}{attributes}{id} } @m ], [ 1 .. 10 ], 'each row once, in key order');

# --- durable, NATS down: the outbox keeps the batches, the backfill completes
$nats->stop;
$err = backfill('durable');
like($err, qr/backfill of items done \(10 events in 4 batches\)/, 'durable, NATS down: the backfill completes');
$nats->start;
@m = $nats->wait_for_messages(10, subject => 'org.t.bf.durable', timeout => 60);
is_deeply([ map { $_->{body}{attributes}{id} } @m ], [ 1 .. 10 ], 'and is delivered once NATS is back');

$node->stop;
$nats->stop;
done_testing();
