
# 011_cluster.pl
#    A 3-node JetStream cluster on loopback; nats_url lists all three; the
#    stream is created with stream_replicas = 3.  The node the sessions are
#    connected to is killed in the middle of a run of committing sessions:
#    publishing goes on through the other nodes by itself, and the WARNINGs,
#    stats() and the stream agree on what was refused or unconfirmed.  The
#    runs are bounded by counts (pgbench -t, paced with -R); the stream is
#    polled by its state and read once.

use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX qw(strftime);
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my @ports = map { PostgreSQL::Test::Cluster::get_free_port() } 1 .. 9;
my @nodes;
for my $i (0 .. 2)
{
    my ($client, $route, $http) = @ports[ 3 * $i .. 3 * $i + 2 ];
    my @routes = map { "nats://127.0.0.1:$ports[3 * $_ + 1]" } grep { $_ != $i } 0 .. 2;
    push @nodes, NatsServer->new(port => $client, extra_conf => qq{
server_name: n$i
http: 127.0.0.1:$http
cluster { name: she, listen: 127.0.0.1:$route, routes: [ @{[ join(', ', @routes) ]} ] }
});
    $nodes[-1]{http} = $http;
}
$_->start(no_wait => 1) for @nodes;
$_->wait_ready for @nodes;
# Clustered JetStream answers "temporarily unavailable" until its meta group
# has a leader, which on a loaded machine can come seconds after every node
# accepts connections.
{
    my $http = HTTP::Tiny->new(timeout => 2);
    my $leader = '';
    for (1 .. 600)
    {
        my $r = $http->get("http://127.0.0.1:$nodes[0]{http}/jsz");
        $leader = (eval { decode_json($r->{content})->{meta_cluster}{leader} } // '') if $r->{success};
        last if $leader ne '';
        usleep(100_000);
    }
    die "the JetStream cluster elected no meta leader within 60 s" if $leader eq '';
    note("JetStream meta leader: $leader");
}
my $urls = join(',', map { $_->url } @nodes);

my $node = she_node('cluster', undef, preload => 1, conf => qq{
state_hub_events.nats_url = '$urls'
state_hub_events.stream_replicas = 3
state_hub_events.connect_timeout = '1s'
state_hub_events.publish_timeout = '2s'
state_hub_events.retry_interval = '500ms'
state_hub_events.database = 'postgres'
});

$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.cluster.first')});
my $info = $nodes[0]->stream_info;
is($info->{replicas}, 3, 'the stream was created with 3 replicas');
my $ping = decode_json($node->safe_psql('postgres', 'SELECT state_hub_events.ping()'));
is($ping->{replicas}, 3, 'ping() reports the replicas');
$node->safe_psql('postgres', 'SELECT state_hub_events.stats_reset()');

# Which connections does a node hold?  Ask its monitor (names, or () when
# it does not answer).
sub connection_names
{
    my ($n) = @_;
    my $r = HTTP::Tiny->new(timeout => 2)->get("http://127.0.0.1:$n->{http}/connz?limit=1024");
    return () unless $r->{success};
    return map { $_->{name} // '' } @{ decode_json($r->{content})->{connections} || [] };
}

sub write_script
{
    my ($name, $sql) = @_;
    my $file = $node->basedir . "/$name";
    open my $fh, '>', $file or die $!;
    print $fh $sql;
    close $fh;
    return $file;
}

# pgbench with a fixed number of transactions per client (-t), paced (-R,
# transactions per second over all clients) so that the run outlasts the
# failover on any machine while its volume stays bounded.
sub start_pgbench
{
    my ($script, $per_client, $rate, $out, $err) = @_;
    return IPC::Run::start(
        [ 'pgbench', '-n', '-c', '4', '-j', '4', '-t', $per_client, '-R', $rate,
          '-f', $script, $node->connstr('postgres') . ' application_name=pgbench' ],
        '>', $out, '2>', $err, IPC::Run::timeout(600));
}

# 4 sessions commit 1,200 transactions each, one event per transaction,
# 400 per second in all; each event names its session's backend
my $per_client = 1200;
my $script = write_script('one.sql',
    "SELECT state_hub_events.publish('org.t.cluster.run', jsonb_build_object('c', :client_id, 'pid', pg_backend_pid()));\n");
my ($out, $err) = ('', '');
my $h = start_pgbench($script, $per_client, 400, \$out, \$err);

# when the sessions are connected, kill the node holding most of them
my ($victim, @victim_pids, @victim_names);
# One publisher process holds the cluster's one connection: kill its node.
wait_until('the 4 pgbench sessions to run and the publisher to connect to NATS', 60, sub {
    @victim_pids = split /\n/,
      $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'});
    return 0 unless @victim_pids >= 4;
    my @on = map { [ grep { /^state_hub_events publisher pid=\d+$/ } connection_names($_) ] } @nodes;
    ($victim) = grep { @{ $on[$_] } } 0 .. 2;
    return 0 unless defined $victim;
    @victim_names = @{ $on[$victim] };
    return 1;
});
ok(defined $victim, 'found the node the publisher is connected to')
  or die 'cannot go on without knowing which node to kill';
is(scalar(map { grep { /^state_hub_events/ && !/ db=/ } connection_names($_) } @nodes), 1,
    'the sessions share one connection, the publisher\'s, named after it');
note("node n$victim serves the sessions of backends @victim_pids");
# a tenth of the run published before the kill (stats() is cluster-wide)
ok(wait_until('400 events published before the kill', 120, sub {
    $node->safe_psql('postgres', 'SELECT published >= 400 FROM state_hub_events.stats()') eq 't' }),
    'the sessions publish through the cluster');
my $killed_at = time;
$nodes[$victim]->kill9;
note("killed node n$victim");
IPC::Run::finish($h) or diag("pgbench: $err");

my ($xacts) = $out =~ /number of transactions actually processed: (\d+)/;
is($xacts, 4 * $per_client, "pgbench committed all $xacts transactions");
my ($warn_refused, $warn_unconf) = (0, 0);
$warn_refused += $1 while $err =~ /(\d+) of \d+ events of the committed transaction were not published/g;
$warn_unconf += $1 while $err =~ /(\d+) of \d+ events were sent but not confirmed/g;
note("WARNINGs: $warn_refused refused, $warn_unconf unconfirmed");

my ($published, $failed, $unconfirmed) = split /\|/,
  $node->safe_psql('postgres', 'SELECT published, failed, unconfirmed FROM state_hub_events.stats()');
# read the stream back from a surviving node, once the cluster has
# recovered its stream leader (raft elections take seconds under load):
# poll the stream's state, then read its messages on this subject once
my $survivor = $nodes[ ($victim + 1) % 3 ];
$survivor->wait_for_count($published, subject => 'org.t.cluster.run', timeout => 120);
my @m = $survivor->messages(undef, undef, subject => 'org.t.cluster.run');
my %ids = map { $_->{msg_id} => 1 } @m;
note("xacts $xacts; stats: published $published, failed $failed, unconfirmed $unconfirmed; stream holds " . scalar(keys %ids));

is($published + $failed + $unconfirmed, $xacts, 'every committed event is counted exactly once in stats()');
is($failed, $warn_refused, 'stats().failed agrees with the WARNINGs');
is($unconfirmed, $warn_unconf, 'stats().unconfirmed agrees with the WARNINGs');
cmp_ok(scalar(keys %ids), '>=', $published, 'the stream holds every acknowledged event');
cmp_ok(scalar(keys %ids), '<=', $published + $unconfirmed, 'and nothing that was refused');
is(scalar @m, scalar(keys %ids), 'and each of them once');

# the sessions that were connected to the dead node went on through the others
my $later = strftime('%Y-%m-%dT%H:%M:%S', gmtime($killed_at + 3));
my @after = grep { $_->{body}{timestamp} gt $later } @m;
note("events committed more than 3 s after the kill: " . scalar @after);
cmp_ok(scalar @after, '>', 0, 'the running sessions reconnected to another node by themselves');
my %after_pid = map { $_->{body}{attributes}{pid} => 1 } @after;
is_deeply([ grep { !$after_pid{$_} } @victim_pids ], [],
    'every session published through another node after the kill');

# publishing goes on through the surviving nodes
my ($ret, $o2, $e2);
wait_until('a new session to publish without a WARNING', 30, sub {
    ($ret, $o2, $e2) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.cluster.after') IS NOT NULL});
    return $e2 eq '';
});
is($e2, '', 'after the node died, a new session publishes through the others');

# --- durable mode: kill the node the worker is connected to while sessions commit
$nodes[$victim]->start;    # the cluster is whole again
$node->safe_psql('postgres', q{
    ALTER SYSTEM SET state_hub_events.delivery = 'durable';
    SELECT pg_reload_conf();
    CREATE TABLE d (id bigserial PRIMARY KEY);
    CREATE TRIGGER d_added AFTER INSERT ON d FOR EACH ROW
        EXECUTE FUNCTION state_hub_events.emit('org.t.cluster.durable', 'id');
});
my $wpid = $node->safe_psql('postgres', 'SELECT worker_pid FROM state_hub_events.backlog()');
my $dscript = write_script('d.sql', "INSERT INTO d DEFAULT VALUES;\n");
($out, $err) = ('', '');
$h = start_pgbench($dscript, 1000, 400, \$out, \$err);
my $wvictim;
wait_until("the durable worker (pid $wpid) to connect to NATS", 60, sub {
    for my $i (0 .. 2)
    {
        $wvictim = $i if grep { $_ eq "state_hub_events db=postgres pid=$wpid" } connection_names($nodes[$i]);
    }
    return defined $wvictim;
});
ok(defined $wvictim, 'found the node the durable worker publishes to')
  or die 'cannot go on without knowing which node to kill';
my $alive = $nodes[ ((defined $wvictim ? $wvictim : 0) + 1) % 3 ];
# kill it once the worker has published a quarter of the run
ok($alive->wait_for_count(1000, subject => 'org.t.cluster.durable', timeout => 120) >= 1000,
    'the worker publishes while the sessions commit');
$nodes[$wvictim]->kill9 if defined $wvictim;
IPC::Run::finish($h) or diag("pgbench: $err");
like($out, qr/number of transactions actually processed: 4000\b/, 'durable: pgbench committed all 4,000 transactions');
like($err, qr/^$|^\s*$/s, 'durable: committing sessions saw no WARNING');
my %want = map { $_ => 1 } split /\n/, $node->safe_psql('postgres', 'SELECT id FROM d');
$alive->wait_for_count(scalar(keys %want), subject => 'org.t.cluster.durable', timeout => 120);
my %got = map { $_->{body}{attributes}{id} => 1 }
  $alive->messages(undef, undef, subject => 'org.t.cluster.durable');
note('durable: ' . scalar(keys %want) . ' committed, ' . scalar(keys %got) . ' in the stream');
is(scalar(grep { !$got{$_} } keys %want), 0, 'durable: every committed event reached the stream despite the killed node');
is(scalar(grep { !$want{$_} } keys %got), 0, 'durable: and nothing that was not committed');

$node->stop;
$_->stop for grep { $_->{pid} } @nodes;
done_testing();
