# 033_batch_linger.pl
#    batch_linger: the publisher holds a small write back while more commits
#    arrive, so commits that do not wait for acknowledgements share writes;
#    a lone commit that waits for its acknowledgements is not held back.
#    Counts (writes, events, the stream) are what is checked, never times,
#    except that a held-back commit would take the whole linger (1 s here).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('linger', $nats, conf => q{
state_hub_events.batch_linger = '1000ms'
state_hub_events.publish_timeout = '30s'
});

sub counters
{
    return split /\|/, $node->safe_psql('postgres',
        q{SELECT publisher_batches, publisher_events, published, failed, unconfirmed FROM state_hub_events.stats()});
}

# the stream exists before anything is measured
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.warmup')});
wait_for_messages($nats, 1, 'ACTIVITY_EVENTS');

# 20 transactions that do not wait, from one session, 10 ms apart: without
# linger each would find the publisher idle and go in a write of its own
my @s0 = counters();
my $sql = "SET state_hub_events.wait_for_ack = off;\n"
  . join('', map { "SELECT state_hub_events.publish('org.t.nowait', '{\"n\": $_}'), pg_sleep(0.01);\n" } 1 .. 20);
$node->safe_psql('postgres', $sql);
my @msgs = wait_for_messages($nats, 21, 'ACTIVITY_EVENTS');
is(scalar(grep { $_->{subject} eq 'org.t.nowait' } @msgs), 20, 'all 20 events are in the stream');
is_deeply([ map { $_->{body}{attributes}{n} } grep { $_->{subject} eq 'org.t.nowait' } @msgs ],
    [ 1 .. 20 ], 'in commit order');
ok(wait_until('the publisher counts the 20 published', 30, sub {
    my @s = counters(); $s[2] - $s0[2] == 20 }), 'stats() counts 20 published');
my @s1 = counters();
is($s1[1] - $s0[1], 20, 'the publisher wrote 20 events');
note('writes: ' . ($s1[0] - $s0[0]));
cmp_ok($s1[0] - $s0[0], '<=', 3, 'in at most 3 writes: commits that arrived while a write was held (1 s) joined it');
is($s1[3] - $s0[3] + $s1[4] - $s0[4], 0, 'nothing failed or unconfirmed');

# a lone commit that waits for its acknowledgement is published at once:
# no other transaction is on its way, so nothing is held back
@s0 = counters();
$node->safe_psql('postgres', q{SELECT state_hub_events.stats_reset()});
$node->safe_psql('postgres', join('', map { "SELECT state_hub_events.publish('org.t.wait');\n" } 1 .. 3));
my $p99 = $node->safe_psql('postgres', q{SELECT commit_publish_p99_ms FROM state_hub_events.stats()});
cmp_ok($p99, '<', 1000, "a waiting commit is not held for the linger (p99 $p99 ms)");

# a commit that waits (publish_timeout 1 s) joins the held-back write of
# one that does not (30 s): the group waits up to 30 s on a hung server, so
# A gives up first and its backend counts its event unconfirmed; the late
# acknowledgement after the server resumes must not count it again
@s0 = counters();
$nats->pause;
$node->safe_psql('postgres', q{SET state_hub_events.wait_for_ack = off; SELECT state_hub_events.publish('org.t.group.x')});
my ($ret, $out, $err) = $node->psql('postgres', q{SET state_hub_events.publish_timeout = '1s'; SELECT state_hub_events.publish('org.t.group.a')});
like($err, qr/1 of 1 events were sent but not confirmed/, 'A joined the held write, was sent, and gave up waiting');
$nats->resume;
is($nats->wait_for_count(2, subject => 'org.t.group.*'), 2, 'both events reached the stream once the server resumed');
# a later waiting commit: the publisher is done with the group
($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.group.after')});
is($err, '', 'a later commit is published');
@s1 = counters();
is($s1[2] - $s0[2], 2, 'stats() published: X and the later one, not A again');
is($s1[4] - $s0[4], 1, 'stats() unconfirmed: A, once');
is($s1[3] - $s0[3], 0, 'nothing failed');

# batch_linger is a server setting
($ret, $out, $err) = $node->psql('postgres', q{SET state_hub_events.batch_linger = 0});
like($err, qr/cannot be changed now/, 'batch_linger cannot be SET in a session');
$node->safe_psql('postgres', q{ALTER SYSTEM SET state_hub_events.batch_linger = 0; SELECT pg_reload_conf()});
ok(wait_until('the reload', 30, sub {
    $node->safe_psql('postgres', 'SHOW state_hub_events.batch_linger') eq '0' }), 'reloaded: batch_linger = 0');
$node->safe_psql('postgres', "SET state_hub_events.wait_for_ack = off;\n"
    . join('', map { "SELECT state_hub_events.publish('org.t.nolinger');\n" } 1 .. 5));
@msgs = wait_for_messages($nats, 29, 'ACTIVITY_EVENTS');
is(scalar(grep { $_->{subject} eq 'org.t.nolinger' } @msgs), 5, 'without linger every event is published too');
@s1 = counters();

$node->stop;
$nats->stop;
done_testing();
