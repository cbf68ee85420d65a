
# 023_versions.pl
#    What a newer nats.c or nats-server adds, tested on both sides of each
#    version line (make test-matrix runs this file with nats.c 3.4, 3.10 and
#    3.14 and nats-server 2.9, 2.10 and 2.15):
#    - ping() names the client library, and the server's name with nats.c
#      3.14 and later (null before);
#    - tls_handshake_first: with nats.c 3.9 and later the extension connects
#      to a nats-server (2.10 and later) that requires the TLS handshake
#      first, and only with the setting on; with older nats.c the setting is
#      refused at ALTER SYSTEM (a connection setting, read by the
#      publisher process at reload), and such a server cannot be reached.

use strict;
use warnings;

use IO::Socket::INET;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use NatsServer;
use SheTest;

my $node = she_node('versions', undef, conf => q{
state_hub_events.connect_timeout = '1s'
state_hub_events.publish_timeout = '1s'
state_hub_events.retry_interval = '0'
});

# --- the client library and the server's name
my $named = NatsServer->new(extra_conf => "server_name: she_named\n")->start;
my $url = $named->url;
she_set_conn($node, nats_url => $url);
my $ping = decode_json($node->safe_psql('postgres', "SELECT state_hub_events.ping();"));
like($ping->{nats_client}, qr/^\d+\.\d+\.\d+/, 'ping() names the nats.c version');
my ($cmaj, $cmin) = $ping->{nats_client} =~ /^(\d+)\.(\d+)/;
sub client_at_least { my ($ma, $mi) = @_; return $cmaj > $ma || ($cmaj == $ma && $cmin >= $mi); }
my ($smaj, $smin, $spatch) = NatsServer->version;
note("nats.c $ping->{nats_client}, nats-server $smaj.$smin.$spatch");

if (client_at_least(3, 14))
{
    is($ping->{server_name}, 'she_named', 'nats.c 3.14+: ping() reports the server name');
}
else
{
    ok(exists $ping->{server_name} && !defined $ping->{server_name},
        'nats.c before 3.14: ping() reports server_name as null');
}
is($ping->{tls_handshake_first}, JSON::PP::false, 'tls_handshake_first is off by default');
$named->stop;

# --- TLS handshake first
my $d = PostgreSQL::Test::Utils::tempdir('certs');
sub openssl { system_or_bail('openssl', @_); }
openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
    '-subj', '/CN=state_hub_events test ca', '-keyout', "$d/ca.key", '-out', "$d/ca.pem");
openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost',
    '-keyout', "$d/server.key", '-out', "$d/server.csr");
open my $fh, '>', "$d/server.ext" or die $!;
print $fh "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
close $fh;
openssl('x509', '-req', '-in', "$d/server.csr", '-CA', "$d/ca.pem", '-CAkey', "$d/ca.key",
    '-CAcreateserial', '-days', '2', '-extfile', "$d/server.ext", '-out', "$d/server.pem");

# publish one event and ping with these settings: (publish stderr, ping
# stdout, ping stderr)
sub attempt
{
    my ($settings) = @_;
    $settings = she_apply_sets($node, $settings);
    my ($ret, $out, $err) = $node->psql('postgres',
        "$settings SELECT state_hub_events.publish('org.t.tlsfirst') IS NOT NULL;");
    my ($pret, $pout, $perr) = $node->psql('postgres', "$settings SELECT state_hub_events.ping();");
    return ($err, $pout, $perr);
}

# a server that requires the TLS handshake first (nats-server 2.10+)
my $first;
if (NatsServer->at_least(2, 10))
{
    $first = NatsServer->new(tool_ca => "$d/ca.pem", tool_tls_first => 1, extra_conf => qq{
tls { cert_file: "$d/server.pem", key_file: "$d/server.key", handshake_first: true }
});
    # the test tools can reach it only with a nats.c that can do it
    if (client_at_least(3, 9))
    {
        $first->start;
    }
    else
    {
        $first->start(no_wait => 1);
        my $up;
        for (1 .. 200)
        {
            $up = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $first->port, Timeout => 1);
            last if $up;
            usleep(50_000);
        }
        ok($up, 'the handshake-first server listens');
        close $up if $up;
    }
}
my $ca = "SET state_hub_events.tls_ca_file = '$d/ca.pem';";
my $set_first = "ALTER SYSTEM SET state_hub_events.tls_handshake_first = on;";

if (client_at_least(3, 9))
{
    my ($ret) = $node->psql('postgres', $set_first);
    is($ret, 0, 'nats.c 3.9+: tls_handshake_first can be set');
    $node->safe_psql('postgres', 'ALTER SYSTEM RESET state_hub_events.tls_handshake_first;');

    if ($first)
    {
        my $furl = $first->url;
        my ($err, $pout, $perr) = attempt("SET state_hub_events.nats_url = '$furl'; $ca "
              . "SET state_hub_events.tls_handshake_first = 'on';");
        is($err, '', 'TLS handshake first: the event is published');
        my $p = decode_json($pout);
        is($p->{tls_handshake_first}, JSON::PP::true, 'ping() says the handshake was TLS first');
        is($p->{tls}, JSON::PP::true, 'and that TLS is on');
        is(scalar($first->messages), 1, 'the event is in the stream');

        ($err, $pout, $perr) = attempt("SET state_hub_events.nats_url = '$furl'; $ca");
        like($err, qr/not published/, 'without the setting, the handshake-first server cannot be used');
        like($perr, qr/ERROR:.*cannot reach NATS/, 'and ping() says it cannot reach it');
        is(scalar($first->messages), 1, 'nothing more reached the stream');
    }
    else
    {
        note("nats-server $smaj.$smin cannot require the TLS handshake first (2.10+): server side skipped");
    }

    # the setting on against a server that sends its INFO first
    my $tls = NatsServer->new(tool_ca => "$d/ca.pem", extra_conf => qq{
tls { cert_file: "$d/server.pem", key_file: "$d/server.key" }
})->start;
    my $turl = $tls->url;
    my ($err, $pout, $perr) = attempt("SET state_hub_events.nats_url = '$turl'; $ca "
          . "SET state_hub_events.tls_handshake_first = 'on';");
    like($perr, qr/ERROR:.*cannot reach NATS/,
        'TLS handshake first against a server that sends its INFO first fails: the two must agree');
    ($err, $pout, $perr) = attempt("SET state_hub_events.nats_url = '$turl'; $ca");
    is($err, '', 'and without the setting it publishes');
    $tls->stop;
}
else
{
    my ($ret, $out, $err) = $node->psql('postgres', $set_first);
    isnt($ret, 0, 'nats.c before 3.9: tls_handshake_first = on is refused');
    like($err, qr/invalid value for parameter "state_hub_events.tls_handshake_first".*nats\.c 3\.9 and later can/s,
        'and the error says which nats.c can');

    if ($first)
    {
        my $furl = $first->url;
        my ($err, $pout, $perr) = attempt("SET state_hub_events.nats_url = '$furl'; $ca");
        like($err, qr/not published/, 'a server that requires the TLS handshake first cannot be used');
        like($perr, qr/ERROR:.*cannot reach NATS/, 'and ping() says it cannot reach it');
    }
}

$first->stop if $first;
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no backend crashed');
$node->stop;
done_testing();
