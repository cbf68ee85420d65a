
# 111_ping_hung_commits.pl
#    ping() is answered by the publisher process, between batches.  With
#    the server hung (SIGSTOP), a ping() made the publisher wait for the
#    server (its RTT flush, then the stream lookup for publish_timeout) with
#    signals blocked, and commits queued meanwhile waited behind it: each
#    got "the publisher process did not report within publish_timeout"
#    after waiting longer than its publish_timeout, its events never sent
#    (counted failed), where without the ping they are sent and counted
#    unconfirmed.  Now the publisher's ping waits at most
#    min(connect_timeout, publish_timeout) for the server (PING, then the
#    stream lookup, together) and says the server did not answer: a commit
#    queued behind a ping gets the same outcome as one without (sent,
#    unconfirmed at its publish_timeout), stats() count exactly that, and
#    ping() stays cancellable at once.  (Measured before: each commit
#    waited 4.0 s, publish_timeout 3 s plus the 1 s grace, and ping()
#    itself gave up after 8 s: nats.c's GetRTT waits 10 s for a PONG.)

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('ping_hung', $nats, conf => q{
state_hub_events.publish_timeout = '3s'
state_hub_events.retry_interval = '100ms'
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{SELECT state_hub_events.publish('org.t.warm')});
is($nats->wait_for_count(1, subject => 'org.t.warm', timeout => 30), 1, 'the publisher publishes');
sql('SELECT state_hub_events.stats_reset()');

# a session whose query is running (pg_stat_activity) with text like $pat
sub running
{
    my ($pat) = @_;
    return sql(qq{SELECT count(*) FROM pg_stat_activity
                   WHERE state = 'active' AND query LIKE '%$pat%' AND pid <> pg_backend_pid()});
}

$nats->pause;

# 1. a ping() on the hung server, then two commits behind it
my $pinger = $node->background_psql('postgres', on_error_stop => 0);
$pinger->query_until(qr/go/, q{\echo go
SELECT state_hub_events.ping() /* the ping */;
});
ok(wait_until('the ping runs', 30, sub { running('the ping') eq '1' }), 'a ping() waits on the hung server');

my @commits;
for my $k (1 .. 2)
{
    my $s = $node->background_psql('postgres', on_error_stop => 0);
    $s->query_until(qr/go/, qq{\\echo go
SELECT count(state_hub_events.publish('org.t.behind.$k', jsonb_build_object('g', g))) /* commit $k */
  FROM generate_series(1, 2) g;
});
    push @commits, [ $s, time ];
}
for my $k (1 .. 2)
{
    my ($s, $t0) = @{ $commits[ $k - 1 ] };
    my ($out, $ret) = $s->query('SELECT 1');
    my $took = time - $t0;
    my $err = $s->{stderr};
    diag(sprintf('commit %d took %.1f s: %s', $k, $took, $err));
    like($err, qr/2 of 2 events were sent but not confirmed within state_hub_events.publish_timeout/,
        "commit $k: its events were sent and are unconfirmed, as without the ping");
    unlike($err, qr/did not report|not taken/, "commit $k: the publisher took its batch");
    $s->quit;
}
is(sql(q{SELECT concat_ws('|', published, failed, unconfirmed) FROM state_hub_events.stats()}),
    '0|0|4', 'stats(): the four events unconfirmed, none failed');

my ($pout, $pret) = $pinger->query('SELECT 1');
diag('ping: ' . $pinger->{stderr});
like($pinger->{stderr}, qr/cannot reach NATS at .*(timeout|did not answer)/i,
    'the ping says the server did not answer');
$pinger->quit;

# 2. ping() is cancellable at once while the publisher waits for the server
my $p2 = $node->background_psql('postgres', on_error_stop => 0);
my $p2pid = $p2->query_safe('SELECT pg_backend_pid()');
$p2->query_until(qr/go/, q{\echo go
SELECT state_hub_events.ping() /* the second ping */;
});
ok(wait_until('the second ping runs', 30, sub { running('the second ping') eq '1' }), 'a second ping() waits');
my $t0 = time;
sql("SELECT pg_cancel_backend($p2pid)");
$p2->query('SELECT 1');
my $took = time - $t0;
like($p2->{stderr}, qr/canceling statement due to user request/, 'the ping was cancelled');
ok($took < 2, sprintf('within a second or so (%.2f s)', $took));
$p2->quit;

$nats->resume;
sql(q{SELECT state_hub_events.publish('org.t.after')});
is($nats->wait_for_count(1, subject => 'org.t.after', timeout => 30), 1, 'publishing resumes');
like(sql(q{SELECT state_hub_events.ping()->>'stream'}), qr/ACTIVITY_EVENTS/, 'ping() answers again');

$node->stop;
$nats->stop;
done_testing();
