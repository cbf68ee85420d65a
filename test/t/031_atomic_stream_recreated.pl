
# 031_atomic_stream_recreated.pl
#    Immediate mode with atomic batches: the publisher judged the stream
#    (allow_atomic), then the stream is deleted.  The next transaction of
#    two events meets "no responders": its members went as core publishes
#    (dropped: no stream), and only the commit message is kept and sent
#    again once the stream is re-created.  Every event of that transaction
#    must still be stored (or at least be counted exactly), never a commit
#    alone counted for the whole batch.  The atomic path needs nats-server
#    2.12 or later (NATS_SERVER); an older server checks the one-by-one
#    path of the same scenario.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $atomic = NatsServer->at_least(2, 12);

my $nats = NatsServer->new->start;
my $node = she_node('atomicrecreate', $nats, conf => q{
state_hub_events.publish_timeout = '5s'
state_hub_events.retry_interval = '200ms'
state_hub_events.atomic_batches = on
state_hub_events.atomic_batch_max = 3
});

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub log_since { return PostgreSQL::Test::Utils::slurp_file($node->logfile, $_[0]); }
sub stats
{
    my @c = qw(published failed unconfirmed atomic_batches);
    my @v = split /\|/, sql('SELECT ' . join(', ', @c) . ' FROM state_hub_events.stats()');
    return { map { $c[$_] => $v[$_] } 0 .. $#c };
}
sub txn
{
    my ($subject) = @_;
    my ($out, $err) = ('', '');
    $node->psql('postgres', qq{BEGIN;
SELECT state_hub_events.publish('$subject', '{"i": 1}');
SELECT state_hub_events.publish('$subject', '{"i": 2}');
COMMIT;}, stdout => \$out, stderr => \$err);
    return $err;
}

# the publisher creates the stream (allow_atomic) and judges it
my $offset = -s $node->logfile;
my $judged = wait_until('the publisher to judge the stream', 60, sub {
    txn('org.t.rc.warm');
    return log_since($offset) =~ /publisher: (?:publishing each transaction's events to stream "ACTIVITY_EVENTS" as atomic batches|state_hub_events.atomic_batches is on, but)/;
});
ok($judged, 'the publisher judged the stream it created');
my $s0 = stats();
txn('org.t.rc.warm');
my $s1 = stats();
is($s1->{atomic_batches} - $s0->{atomic_batches}, $atomic ? 1 : 0,
    $atomic ? 'a two-event transaction went as one atomic batch' : 'an older server: one by one');

# the stream goes away; the publisher still believes it allows atomic batches
$nats->delete_stream('ACTIVITY_EVENTS');
is($nats->count, 0, 'the stream is gone');
my $err = txn('org.t.rc.after');
my $s2 = stats();
diag("COMMIT said: $err") if $err;
my $stored = $nats->count('ACTIVITY_EVENTS', subject => 'org.t.rc.after');
diag("stream holds $stored of the transaction; stats: published +"
      . ($s2->{published} - $s1->{published}) . ", failed +" . ($s2->{failed} - $s1->{failed})
      . ", unconfirmed +" . ($s2->{unconfirmed} - $s1->{unconfirmed}));
is($s2->{published} - $s1->{published}, $stored, 'stats() published == what the re-created stream holds');
is($stored, 2, 'both events of the transaction are stored in the re-created stream');
unlike($err, qr/WARNING/, 'the commit was not warned about lost events');

$node->stop;
$nats->stop;
done_testing();
