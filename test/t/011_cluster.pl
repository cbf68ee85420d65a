
# 011_cluster.pl
#    A 3-node JetStream cluster on loopback; nats_url lists all three; the
#    stream is created with stream_replicas = 3.  The node the sessions are
#    connected to is killed in the middle of a run of committing sessions:
#    publishing goes on through the other nodes by itself, and the WARNINGs,
#    stats() and the stream agree on what was refused or unconfirmed.

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

# Which node holds the backends' connections?  Ask each node's monitor.
sub connections_on
{
    my ($n) = @_;
    my $r = HTTP::Tiny->new(timeout => 2)->get("http://127.0.0.1:$n->{http}/connz?limit=1024");
    return 0 unless $r->{success};
    my $c = decode_json($r->{content});
    return scalar grep { ($_->{name} // '') =~ /^state_hub_events/ } @{ $c->{connections} || [] };
}

# 4 sessions commit one event per transaction for 15 seconds
my $script = $node->basedir . "/one.sql";
open my $fh, '>', $script or die $!;
print $fh "SELECT state_hub_events.publish('org.t.cluster.run', jsonb_build_object('c', :client_id));\n";
close $fh;
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
    [ 'pgbench', '-n', '-c', '4', '-j', '4', '-T', '15', '-f', $script, $node->connstr('postgres') ],
    '>', \$out, '2>', \$err);

# when the sessions are connected, kill the node holding most of them
my $victim;
for (1 .. 100)
{
    my @c = map { connections_on($_) } @nodes;
    if ((grep { $_ } @c) && $c[0] + $c[1] + $c[2] >= 4)
    {
        my ($i) = sort { $c[$b] <=> $c[$a] } 0 .. 2;
        $victim = $i;
        last;
    }
    usleep(100_000);
}
ok(defined $victim, 'found the node the sessions are connected to');
{
    my $r = HTTP::Tiny->new(timeout => 2)->get("http://127.0.0.1:$nodes[$victim]{http}/connz?limit=1024");
    my @names = map { $_->{name} // '' } @{ decode_json($r->{content})->{connections} || [] };
    ok((grep { /^state_hub_events db=postgres pid=\d+$/ } @names),
        'connections are named after the database and backend they serve');
}
usleep(2_000_000);
my $killed_at = time;
$nodes[$victim]->kill9;
note("killed node n$victim");
IPC::Run::finish($h);

my ($xacts) = $out =~ /number of transactions actually processed: (\d+)/;
ok($xacts > 0, "pgbench committed $xacts transactions");
my ($warn_refused, $warn_unconf) = (0, 0);
$warn_refused += $1 while $err =~ /(\d+) of \d+ events of the committed transaction were not published/g;
$warn_unconf += $1 while $err =~ /(\d+) of \d+ events were sent but not confirmed/g;
note("WARNINGs: $warn_refused refused, $warn_unconf unconfirmed");

my ($published, $failed, $unconfirmed) = split /\|/,
  $node->safe_psql('postgres', 'SELECT published, failed, unconfirmed FROM state_hub_events.stats()');
# read the stream back from a surviving node, once the cluster has
# recovered its stream leader (raft elections take seconds under load)
my $survivor = $nodes[ ($victim + 1) % 3 ];
my @m;
for (1 .. 300)
{
    @m = eval { grep { $_->{subject} eq 'org.t.cluster.run' } $survivor->messages };
    last if @m >= $published;
    usleep(100_000);
}
my %ids = map { $_->{msg_id} => 1 } @m;
note("xacts $xacts; stats: published $published, failed $failed, unconfirmed $unconfirmed; stream holds " . scalar(keys %ids));

is($published + $failed + $unconfirmed, $xacts, 'every committed event is counted exactly once in stats()');
is($failed, $warn_refused, 'stats().failed agrees with the WARNINGs');
is($unconfirmed, $warn_unconf, 'stats().unconfirmed agrees with the WARNINGs');
cmp_ok(scalar(keys %ids), '>=', $published, 'the stream holds every acknowledged event');
cmp_ok(scalar(keys %ids), '<=', $published + $unconfirmed, 'and nothing that was refused');

# the sessions that were connected to the dead node went on through the others
my $later = strftime('%Y-%m-%dT%H:%M:%S', gmtime($killed_at + 3));
my $after = grep { $_->{body}{timestamp} gt $later } @m;
note("events committed more than 3 s after the kill: $after");
cmp_ok($after, '>', 0, 'the running sessions reconnected to another node by themselves');

# publishing goes on through the surviving nodes
my ($ret, $o2, $e2);
for (1 .. 150)
{
    ($ret, $o2, $e2) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.cluster.after') IS NOT NULL});
    last if $e2 eq '';
    usleep(200_000);
}
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
my $dscript = $node->basedir . "/d.sql";
open my $dfh, '>', $dscript or die $!;
print $dfh "INSERT INTO d DEFAULT VALUES;\n";
close $dfh;
($out, $err) = ('', '');
$h = IPC::Run::start(
    [ 'pgbench', '-n', '-c', '4', '-j', '4', '-T', '10', '-f', $dscript, $node->connstr('postgres') ],
    '>', \$out, '2>', \$err);
my $wvictim;
for (1 .. 100)
{
    for my $i (0 .. 2)
    {
        my $r = HTTP::Tiny->new(timeout => 2)->get("http://127.0.0.1:$nodes[$i]{http}/connz?limit=1024");
        next unless $r->{success};
        $wvictim = $i if grep { ($_->{name} // '') eq "state_hub_events db=postgres pid=$wpid" }
          @{ decode_json($r->{content})->{connections} || [] };
    }
    last if defined $wvictim;
    usleep(100_000);
}
ok(defined $wvictim, 'found the node the durable worker publishes to');
usleep(3_000_000);
$nodes[$wvictim]->kill9 if defined $wvictim;
IPC::Run::finish($h);
like($err, qr/^$|^\s*$/s, 'durable: committing sessions saw no WARNING');
my %want = map { $_ => 1 } split /\n/, $node->safe_psql('postgres', 'SELECT id FROM d');
my $alive = $nodes[ ((defined $wvictim ? $wvictim : 0) + 1) % 3 ];
my %got;
for (1 .. 600)
{
    %got = map { $_->{body}{attributes}{id} => 1 }
      grep { $_->{subject} eq 'org.t.cluster.durable' } eval { $alive->messages };
    last if keys %got >= keys %want;
    usleep(200_000);
}
note('durable: ' . scalar(keys %want) . ' committed, ' . scalar(keys %got) . ' in the stream');
is(scalar(grep { !$got{$_} } keys %want), 0, 'durable: every committed event reached the stream despite the killed node');

$node->stop;
$_->stop for grep { $_->{pid} } @nodes;
done_testing();
