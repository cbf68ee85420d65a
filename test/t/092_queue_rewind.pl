
# 092_queue_rewind.pl
#    The queue's ring rewinds: a writer that finds it empty well into a lap
#    pads the rest of the lap and writes at its start, so a steady flow of
#    commits stays within the ring's first pages (each shared page a
#    process touches first costs it a page fault).  Checked by counts: the
#    minor page faults of a session that commits 1,500 events of ~1 kB one
#    by one through a 1 MB ring (without the rewind it touches every page
#    of the ring, 256, and faults on each), and every event in the stream
#    in commit order with stats() exact; then transactions bigger than the
#    ring's free space right after a rewind, and with wait_for_ack = off;
#    and a rewind never makes a batch wait for room it would not have
#    waited for: with NATS paused, the publisher waits for a group's acks
#    and skips no padding meanwhile, so a transaction that fits the ring
#    but not the lap's start must go in without a rewind.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('rewind', $nats, conf => q{
state_hub_events.queue_size = '1MB'
state_hub_events.publish_timeout = '10s'
});

sub stats
{
    my ($r) = $node->safe_psql('postgres',
        q{SELECT published, failed, unconfirmed FROM state_hub_events.stats()});
    return split /\|/, $r;
}

# the minor page faults of a process so far (field 10 of /proc/PID/stat)
sub minflt
{
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or die "cannot read /proc/$pid/stat: $!";
    my $line = <$fh>;
    close $fh;
    $line =~ s/^.*\)\s+//;    # after the command name
    return (split /\s+/, $line)[7];
}

# bytes the stopped nats-server has not read yet: the largest receive
# queue of an established TCP socket on its port (/proc/net/tcp)
sub unread_by_nats
{
    my $port = sprintf('%04X', $nats->port);
    my $max = 0;
    open my $fh, '<', '/proc/net/tcp' or die "cannot read /proc/net/tcp: $!";
    while (my $line = <$fh>)
    {
        my @f = split ' ', $line;
        next unless @f > 4 && $f[1] =~ /:$port$/ && $f[3] eq '01';
        my $rx = hex((split /:/, $f[4])[1]);
        $max = $rx if $rx > $max;
    }
    close $fh;
    return $max;
}

my $pad = 'x' x 900;
# one commit per event, from one session (a procedure-like DO block)
sub commits_sql
{
    my ($from, $to, $subject) = @_;
    return qq{DO \$\$ BEGIN FOR i IN $from..$to LOOP
        PERFORM state_hub_events.publish('$subject', jsonb_build_object('i', i, 'pad', '$pad'));
        COMMIT;
    END LOOP; END \$\$;};
}

my $bg = $node->background_psql('postgres', on_error_stop => 1);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
my @s0 = stats();

# warm up: the session's caches, and the ring's first pages
$bg->query_safe(commits_sql(1, 100, 'org.rw.one'));
my $f0 = minflt($pid);
$bg->query_safe(commits_sql(101, 1600, 'org.rw.one'));
my $f1 = minflt($pid);
my $faults = $f1 - $f0;
diag("minor page faults for 1,500 commits: $faults");
cmp_ok($faults, '<', 64,
    '1,500 commits of ~1 kB through a 1 MB ring fault on few pages (the ring rewinds)');

is($nats->wait_for_count(1600, subject => 'org.rw.one'), 1600, 'all 1,600 events are in the stream');
my @m = $nats->messages(undef, undef, subject => 'org.rw.one');
is(scalar(@m), 1600, 'read back');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1 .. 1600 ], 'in commit order');
my @s1 = stats();
is_deeply([ $s1[0] - $s0[0], $s1[1] - $s0[1], $s1[2] - $s0[2] ], [ 1600, 0, 0 ],
    'stats(): 1,600 published, none failed or unconfirmed');

# --- right after a rewind, transactions bigger than the free space
# (the padding holds the lap's rest until the publisher skips it)
my @s2 = stats();
$bg->query_safe(commits_sql(1, 80, 'org.rw.pre'));    # ~80 kB into a lap at most
my ($ret, $out, $err) = $node->psql('postgres', q{
    BEGIN;
    SELECT count(state_hub_events.publish('org.rw.big', jsonb_build_object('i', i, 'pad', repeat('y', 900))))
      FROM generate_series(1, 2500) i;
    COMMIT;
});
is($err, '', 'a 2,500-event transaction (~2.5 MB) through the 1 MB ring: no WARNING');
($ret, $out, $err) = $node->psql('postgres', q{
    SET state_hub_events.wait_for_ack = off;
    BEGIN;
    SELECT count(state_hub_events.publish('org.rw.big', jsonb_build_object('i', 2500 + i, 'pad', repeat('y', 900))))
      FROM generate_series(1, 1500) i;
    COMMIT;
});
is($err, '', 'and 1,500 more with wait_for_ack = off');
is($nats->wait_for_count(4000, subject => 'org.rw.big'), 4000, 'all 4,000 are in the stream');
@m = $nats->messages(undef, undef, subject => 'org.rw.big');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1 .. 4000 ], 'in order');
my @s3;
ok(wait_until('stats() to count them', 30, sub {
    @s3 = stats();
    return $s3[0] - $s2[0] == 4080;
}), 'stats(): the 4,080 published');
is_deeply([ $s3[1] - $s2[1], $s3[2] - $s2[2] ], [ 0, 0 ], 'none failed or unconfirmed');

# --- NATS paused: the ring is empty (all taken) but the publisher waits
# for the acks of its group; a 300-event transaction (~330 kB) fits the
# 1 MB ring but not a lap's first ~100 kB, so it must not be rewound
@s2 = stats();
$bg->query_safe(commits_sql(1, 70, 'org.rw.pre2'));    # head well into a lap
$nats->pause;
$bg->query_safe(q{SET state_hub_events.wait_for_ack = off});
$bg->query_safe(q{SELECT count(state_hub_events.publish('org.rw.a', jsonb_build_object('i', i, 'pad', repeat('y', 900))))
    FROM generate_series(1, 70) i});
ok(wait_until('the publisher to write the 70 events to the stopped server', 30, sub {
    unread_by_nats() >= 50_000 }),
    'NATS paused: the publisher took the group and wrote it (' . unread_by_nats() . ' bytes unread)');
# one small commit first: it fits any lap's start, but must not rewind
# while the publisher waits for acks (the batch after it would then find
# only that start free until the publisher's next take)
$bg->query_safe(q{SELECT state_hub_events.publish('org.rw.one_more')});
($ret, $out, $err) = $node->psql('postgres', q{
    SET state_hub_events.wait_for_ack = off;
    SET state_hub_events.publish_timeout = '1s';
    SELECT count(state_hub_events.publish('org.rw.b', jsonb_build_object('i', i, 'pad', repeat('y', 900))))
      FROM generate_series(1, 300) i;
});
is($err, '', 'a 300-event transaction into the empty ring: no WARNING (no wait for room)');
$nats->resume;
is($nats->wait_for_count(300, subject => 'org.rw.b'), 300, 'all 300 in the stream once NATS is back');
is($nats->wait_for_count(70, subject => 'org.rw.a'), 70, 'and the 70 before them');
my @s4;
ok(wait_until('stats() to settle', 60, sub {
    @s4 = stats();
    return $s4[0] - $s2[0] == 441;
}), 'stats(): 441 published') or diag("stats: @s4 from @s2");
is_deeply([ $s4[1] - $s2[1], $s4[2] - $s2[2] ], [ 0, 0 ], 'none failed or unconfirmed');

$bg->quit;
$node->stop;
$nats->stop;
done_testing();
