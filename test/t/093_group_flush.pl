
# 093_group_flush.pl
#    A group of events that a session waits for is written at once and
#    flushed with a PING (whose PONG says the bytes reached the server); a
#    group nobody waits for (wait_for_ack = off) is left to nats.c's
#    flusher, with no PING/PONG round trip: CPU on both sides for nothing.
#    Counted in nats-server's protocol trace of the publisher's
#    connection, with the stream and stats() agreeing in both modes.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new(extra_conf => "trace: true\n")->start;
my $node = she_node('flush', $nats);

sub published
{
    return $node->safe_psql('postgres', 'SELECT published FROM state_hub_events.stats()');
}

# PINGs the publisher's connection sent so far, from the server's trace
sub publisher_pings
{
    open my $fh, '<', $nats->{log} or die "cannot read $nats->{log}: $!";
    my ($cid, $pings) = (undef, 0);
    while (my $line = <$fh>)
    {
        $cid = $1 if $line =~ /cid:(\d+) - .*<<- \[CONNECT .*"name":"state_hub_events publisher/;
        $pings++ if defined $cid && $line =~ /cid:$cid - .*<<- \[PING\]/;
    }
    close $fh;
    return ($cid, $pings);
}

# n transactions of two events each, one after the other; with
# wait_for_ack = off each waits until the last one is in the stream, so
# that each is a group of its own
sub two_event_commits
{
    my ($n, $ack, $tag) = @_;
    for my $t (1 .. $n)
    {
        $node->safe_psql('postgres', "SET state_hub_events.wait_for_ack = $ack;\n"
              . "BEGIN; SELECT state_hub_events.publish('org.flush.$tag', jsonb_build_object('t', $t, 'e', 1)),"
              . " state_hub_events.publish('org.flush.$tag', jsonb_build_object('t', $t, 'e', 2)); COMMIT;");
        return 0 if $nats->wait_for_count(2 * $t, subject => "org.flush.$tag", timeout => 30) < 2 * $t;
    }
    return 1;
}

$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.flush.warm')});
is($nats->wait_for_count(1, subject => 'org.flush.warm'), 1, 'warm-up event stored');
my ($cid, $p0) = publisher_pings();
ok(defined $cid, "the publisher's connection is in the server's trace (cid $cid)");

# --- nobody waits: no PING per group
my $s0 = published();
ok(two_event_commits(20, 'off', 'off'), '20 transactions of two events, one group each');
is($nats->wait_for_count(40, subject => 'org.flush.off'), 40, 'wait_for_ack = off: the 40 events are stored');
ok(wait_until('stats() to count them', 30, sub { published() - $s0 == 40 }),
    'and stats() counts 40 published');
my (undef, $p1) = publisher_pings();
cmp_ok($p1 - $p0, '<=', 2, 'no PING per group nobody waits for (' . ($p1 - $p0) . ' PINGs for 40 events)');

# --- sessions wait: each group is flushed with a PING (the control)
$s0 = published();
ok(two_event_commits(20, 'on', 'on'), 'and 20 more with wait_for_ack = on');
is($nats->wait_for_count(40, subject => 'org.flush.on'), 40, 'wait_for_ack = on: the 40 events are stored');
is(published() - $s0, 40, 'and stats() counted them before each COMMIT returned');
my (undef, $p2) = publisher_pings();
cmp_ok($p2 - $p1, '>=', 20, 'a PING per group a session waits for (' . ($p2 - $p1) . ' for 20 groups)');

my @m = grep { $_->{subject} ne 'org.flush.warm' } $nats->messages(undef, undef, subject => 'org.flush.*');
is_deeply([ map { "$_->{subject}:$_->{body}{attributes}{t}.$_->{body}{attributes}{e}" } @m ],
    [ (map { ("org.flush.off:$_.1", "org.flush.off:$_.2") } 1 .. 20),
      (map { ("org.flush.on:$_.1", "org.flush.on:$_.2") } 1 .. 20) ],
    'every event once, in commit order');

$node->stop;
$nats->stop;
done_testing();
