# 094_hung_publisher.pl
#    The publisher process hung (SIGSTOP: alive, its latch set in vain),
#    not dead, so backends do not refuse at once as for a missing
#    publisher.  A COMMIT that waits for acknowledgements returns after its
#    publish_timeout (plus the short grace) with a WARNING that counts its
#    events, and stats() counts each once.  Then 20 sessions, a third with
#    wait_for_ack off, commit through a small queue while the publisher is
#    stopped twice (each time until commits have given up on it) and
#    continued: every committed event has exactly one outcome in stats(),
#    the stream holds each message once, nothing a WARNING called lost,
#    and for each waiting session exactly its events not called lost, less
#    at most those called unconfirmed (after SIGCONT the publisher drops
#    what sessions gave up on before it was taken).  Last, nats-server
#    restarted with a smaller max_payload: publish() refuses an event over
#    the new limit at the call once the publisher has reconnected, and the
#    next small commit is published (this last step failed now and then
#    before the fix of 095: a group sent while the server restarted started
#    the retry_interval back-off, which outlived the reconnect).
#
# Copyright (c) 2026, state_hub_events contributors

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('hungpub', $nats, conf => q{
state_hub_events.publish_timeout = '2s'
state_hub_events.connect_timeout = '1s'
state_hub_events.queue_size = '256kB'
max_connections = 40
});
is($node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.first') IS NOT NULL}),
    't', 'the stream exists');
is($nats->wait_for_count(1, subject => 'org.t.first'), 1, 'the first event landed');
$node->safe_psql('postgres', 'SELECT state_hub_events.stats_reset()');
my $ppid = $node->safe_psql('postgres', q{SELECT state_hub_events.ping()->>'publisher_pid'});

# "published|duplicates|failed|unconfirmed"
sub stats
{
    return $node->safe_psql('postgres',
        'SELECT published, duplicates, failed, unconfirmed FROM state_hub_events.stats()');
}

# the sum of N in "N of M events <what>" over WARNINGs in $err
sub warned
{
    my ($err, $what) = @_;
    my $n = 0;
    $n += $1 while $err =~ /WARNING:  state_hub_events: (\d+) of \d+ events $what/g;
    return $n;
}
my $lost_re = 'of the committed transaction were not published';
my $unc_re = 'were sent but not confirmed';

# --- one session at a time, the publisher stopped
kill 'STOP', $ppid;
for my $s (1 .. 3)
{
    my ($o, $e) = ('', '');
    my $t0 = time;
    IPC::Run::run([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c',
        "SELECT state_hub_events.publish('org.t.hung', jsonb_build_object('s', $s, 'i', g)) FROM generate_series(1, 3) g" ],
        '>', \$o, '2>', \$e);
    my $dt = time - $t0;
    note(sprintf('commit %d returned after %.1f s: %s', $s, $dt, $e));
    cmp_ok($dt, '<', 20, "commit $s returned although the publisher is hung");
    is(warned($e, $lost_re) + warned($e, $unc_re), 3, "commit $s: its WARNING counts its 3 events");
    like($e, qr/DETAIL:  the publisher process did not report within state_hub_events\.publish_timeout/,
        "commit $s: the DETAIL says the publisher did not report");
}
is(stats(), '0|0|9|0', 'stats() counts the 9 events failed while the publisher is hung');
kill 'CONT', $ppid;
# a commit after SIGCONT is published: the publisher runs again
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.after')});
is($nats->wait_for_count(1, subject => 'org.t.after'), 1, 'after SIGCONT the next commit is published');
is($nats->count(undef, subject => 'org.t.hung'), 0, 'nothing the hung publisher was not given is published later');
is(stats(), '1|0|9|0', 'and stats() counts it once');
$node->safe_psql('postgres', 'SELECT state_hub_events.stats_reset()');

# --- 20 sessions, 40 transactions of 20 events (1 kB) each, through a
# 256 kB queue; sessions 2, 5, 8, ... do not wait for acknowledgements
my ($S, $T, $E) = (20, 40, 20);
my (@h, @err);
for my $s (0 .. $S - 1)
{
    my $sql = '';
    $sql .= "SET state_hub_events.wait_for_ack = off;\n" if $s % 3 == 2;
    $sql .= "BEGIN; SELECT count(state_hub_events.publish('org.t.s', jsonb_build_object('s', $s, 't', $_, 'i', g, 'pad', repeat('p', 1000)))) FROM generate_series(1, $E) g; COMMIT;\n"
      for 0 .. $T - 1;
    my $f = $node->basedir . "/s$s.sql";
    open my $fh, '>', $f or die $!;
    print $fh $sql;
    close $fh;
    $err[$s] = '';
    push @h, IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-f', $f ],
        '>', \my $o, '2>', \$err[$s]);
}
for my $round (1, 2)
{
    my (undef, undef, $failed) = split /\|/, stats();
    kill 'STOP', $ppid;
    # stopped until commits have given up on it (or every session is done)
    wait_until("commits to give up on the stopped publisher ($round)", 60, sub {
        my (undef, undef, $f) = split /\|/, stats();
        return $f > $failed || !grep { $_->pumpable } @h;
    });
    kill 'CONT', $ppid;
}
$_->finish for @h;
my $total = $S * $T * $E;
ok(wait_until('every event to have its outcome', 60, sub {
    my ($p, $d, $f, $u) = split /\|/, stats();
    return $p + $f + $u == $total; }), "stats() counts the $total committed events once each");
my ($pub, $dup, $fail, $unc) = split /\|/, stats();
note("stats(): published $pub, duplicates $dup, failed $fail, unconfirmed $unc");
cmp_ok($fail, '>', 0, 'the stops cost events (the test hit the fault)');
unlike(join('', @err), qr/ERROR|FATAL/, 'no session got an error');

my @m = $nats->messages(undef, undef, subject => 'org.t.s', timeout => 60);
my %ids;
my $twice = grep { $ids{ $_->{msg_id} }++ } @m;
is($twice, 0, 'no message is stored twice');
cmp_ok(scalar(@m), '>=', $pub, 'the stream holds every event counted published');
cmp_ok(scalar(@m), '<=', $pub + $unc, 'and none counted failed');
my %in;
$in{ $_->{body}{attributes}{s} }++ for @m;
for my $s (grep { $_ % 3 != 2 } 0 .. $S - 1)
{
    my $l = warned($err[$s], $lost_re);
    my $u = warned($err[$s], $unc_re);
    my $n = $in{$s} // 0;
    ok($n <= $T * $E - $l && $n >= $T * $E - $l - $u,
        "session $s (waits): the stream holds $n of its events, $l called lost, $u unconfirmed");
}

# --- nats-server restarted with a smaller max_payload (4 kB)
$nats->stop;
$nats->{extra_conf} = "max_payload: 4096\n";
$nats->_write_config;
$nats->start;
# (until the publisher has reconnected, the 3 kB event is taken: it fits
# the server's 4 kB, and is published or, while the publisher reconnects,
# refused at COMMIT with a WARNING)
my ($ret, $o, $e);
my $taken = 0;
ok(wait_until('publish() to refuse a 3 kB event at the call', 60, sub {
    ($ret, $o, $e) = $node->psql('postgres',
        q{SELECT state_hub_events.publish('org.t.big', jsonb_build_object('x', repeat('x', 3000)))});
    $taken++ if $ret == 0 && $e !~ /WARNING/;
    return $ret != 0; }), 'publish() refuses an event over the new max_payload at the call');
like($e, qr/ERROR:  cannot publish an event of \d+ bytes/, 'with the size error');
($ret, $o, $e) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.small') IS NOT NULL});
is("$ret|$o|$e", '0|t|', 'a small event is still taken, and committed without a WARNING');
is($nats->wait_for_count(1, subject => 'org.t.small'), 1, 'and published');
is($nats->count(undef, subject => 'org.t.big'), $taken,
    "the stream holds the $taken 3 kB events taken without a WARNING before, none refused");

$node->stop;
$nats->stop;
done_testing();
