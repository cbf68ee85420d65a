
# 014_durable_soak.pl
#    Soak: 50,000 committed events from 4 concurrent sessions while NATS is
#    stopped and started twice and PostgreSQL crashes once; every committed
#    event arrives, none is missing, none is there that did not commit.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $target = 50_000;
my $nats = NatsServer->new->start;
my $node = she_node('soak', $nats, preload => 1, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.retry_interval = '300ms'
state_hub_events.publish_timeout = '2s'
restart_after_crash = on
});
$node->safe_psql('postgres', q{
    CREATE TABLE soak (id bigserial PRIMARY KEY, client int);
    CREATE TRIGGER soak_added AFTER INSERT ON soak FOR EACH ROW
        EXECUTE FUNCTION state_hub_events.emit('org.t.soak', 'id');
});
my $script = $node->basedir . '/soak.sql';
open my $fh, '>', $script or die $!;
print $fh "INSERT INTO soak (client) VALUES (:client_id);\n";
close $fh;

sub committed { my $c = $node->safe_psql('postgres', 'SELECT count(*) FROM soak'); return $c; }

# actions, each while a pgbench segment is running
my @actions = (
    [ 'stop NATS',            sub { $nats->stop } ],
    [ 'start NATS',           sub { $nats->start } ],
    [ 'crash PostgreSQL',     sub { $node->stop('immediate'); $node->start } ],
    [ 'stop NATS again',      sub { $nats->stop } ],
    [ 'start NATS again',     sub { $nats->start } ],
);
my $segment = 0;
my $deadline = time + 900;
while ((my $done = committed()) < $target)
{
    BAIL_OUT("soak: $done of $target transactions committed after 15 minutes and $segment pgbench runs")
      if time > $deadline || $segment > 20;
    my $per_client = int(($target - $done + 3) / 4);
    $per_client = 2500 if $per_client > 2500 && @actions;
    my ($out, $err) = ('', '');
    my $h = IPC::Run::start(
        [ 'pgbench', '-n', '-c', '4', '-j', '4', '-t', $per_client, '-f', $script, $node->connstr('postgres') ],
        '>', \$out, '2>', \$err, IPC::Run::timeout(600));
    if (my $a = shift @actions)
    {
        # act once this segment has committed some transactions
        my $start = $done;
        wait_until("1,000 transactions of segment $segment to commit", 60,
            sub { committed() > $start + 1000 });
        note("segment $segment: $a->[0] at " . (eval { committed() } // '?') . ' committed');
        $a->[1]->();
    }
    eval { IPC::Run::finish($h) };
    $segment++;
}
$nats->start unless $nats->{pid};

my $committed = committed();
cmp_ok($committed, '>=', $target, "$committed transactions committed across the run");

my %want = map { $_ => 1 } split /\n/, $node->safe_psql('postgres', 'SELECT id FROM soak');
# poll the stream's state until it holds them all, then read them once
$nats->wait_for_count($committed, subject => 'org.t.soak', timeout => 300);
ok($node->poll_query_until('postgres', 'SELECT events = 0 FROM state_hub_events.backlog()'),
    'the backlog drained');
my @m = $nats->messages(undef, undef, subject => 'org.t.soak', timeout => 300);
my %got;
$got{ $_->{body}{attributes}{id} }++ for @m;
my @missing = grep { !$got{$_} } keys %want;
my @extra = grep { !$want{$_} } keys %got;
is(scalar @missing, 0, 'every committed event arrived (' . scalar(keys %got) . ' distinct)');
is(scalar @extra, 0, 'no event of a transaction that did not commit');
my %ids;
$ids{ $_->{msg_id} }++ for @m;
is(scalar keys %ids, scalar @m, 'no id is stored twice');
my $dups = $node->safe_psql('postgres', 'SELECT duplicates FROM state_hub_events.stats()');
diag("soak: $committed events committed; re-published and collapsed by Nats-Msg-Id since the crash: $dups");

$node->stop;
$nats->stop;
done_testing();
