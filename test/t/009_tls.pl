
# 009_tls.pl
#    TLS against nats-servers configured for it: the server certificate is
#    verified against tls_ca_file (a wrong CA fails loudly, never downgrades),
#    and client certificates give mutual TLS.  The test makes its own CA and
#    certificates with openssl (IP SAN 127.0.0.1).

use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $d = PostgreSQL::Test::Utils::tempdir('certs');

sub openssl { system_or_bail('openssl', @_); }

# two CAs: the real one and a stranger
for my $ca ('ca', 'other_ca')
{
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
        '-subj', "/CN=state_hub_events test $ca", '-keyout', "$d/$ca.key", '-out', "$d/$ca.pem");
}
sub signed_cert
{
    my ($name, $cn, $ext) = @_;
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', "/CN=$cn",
        '-keyout', "$d/$name.key", '-out', "$d/$name.csr");
    open my $fh, '>', "$d/$name.ext" or die $!;
    print $fh $ext;
    close $fh;
    openssl('x509', '-req', '-in', "$d/$name.csr", '-CA', "$d/ca.pem", '-CAkey', "$d/ca.key",
        '-CAcreateserial', '-days', '2', '-extfile', "$d/$name.ext", '-out', "$d/$name.pem");
}
signed_cert('server', 'localhost', "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
signed_cert('client', 'hub-client', "extendedKeyUsage=clientAuth\n");
signed_cert('wronghost', 'elsewhere.example', "subjectAltName=DNS:elsewhere.example\n");

my $tls = NatsServer->new(tool_ca => "$d/ca.pem", extra_conf => qq{
tls { cert_file: "$d/server.pem", key_file: "$d/server.key" }
})->start;
my $mtls = NatsServer->new(tool_ca => "$d/ca.pem", tool_cert => "$d/client.pem", tool_key => "$d/client.key",
    extra_conf => qq{
tls { cert_file: "$d/server.pem", key_file: "$d/server.key", ca_file: "$d/ca.pem", verify: true }
})->start;

my $wrong = NatsServer->new(extra_conf => qq{
tls { cert_file: "$d/wronghost.pem", key_file: "$d/wronghost.key" }
});
$wrong->start(no_wait => 1);

my $node = she_node('tls', undef, conf => q{
state_hub_events.connect_timeout = '1s'
state_hub_events.publish_timeout = '1s'
state_hub_events.retry_interval = '0'
});

sub attempt
{
    my ($settings, $what) = @_;
    $settings = she_apply_sets($node, $settings);
    my ($ret, $out, $err) = $node->psql('postgres',
        "$settings SELECT state_hub_events.publish('org.t.tls') IS NOT NULL;");
    my ($pret, $pout, $perr) = $node->psql('postgres', "$settings SELECT state_hub_events.ping();");
    return ($err, $pout, $perr);
}

my $url = $tls->url;
my ($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$url'; SET state_hub_events.tls_ca_file = '$d/ca.pem';");
is($err, '', 'TLS with the right CA publishes');
is(decode_json($ping)->{tls}, JSON::PP::true, 'ping() says TLS is on');
is(scalar($tls->messages), 1, 'the event is in the stream');

($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$url'; SET state_hub_events.tls_ca_file = '$d/other_ca.pem';");
like($err, qr/not published/, 'a wrong CA: the event is not published');
like($perr, qr/ERROR:.*cannot reach NATS.*(certificate|SSL|TLS|handshake)/i, 'ping() says the certificate did not verify');

(my $plain_url = $url) =~ s/^tls:/nats:/;
($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$plain_url';");
like($err, qr/not published/, 'no TLS settings against a TLS server: nothing is sent in clear');
like($perr, qr/ERROR:.*cannot reach NATS/, 'and ping() says why');
is(scalar($tls->messages), 1, 'the stream still holds only the TLS event');

# a certificate for another host name, signed by the right CA
my $wurl = 'tls://127.0.0.1:' . $wrong->port;
($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$wurl'; SET state_hub_events.tls_ca_file = '$d/ca.pem';");
like($err, qr/not published/, 'a server certificate for another host name: not published');
like($perr, qr/ERROR:.*cannot reach NATS/, 'and ping() says it cannot connect');
$wrong->stop;

# mutual TLS
$url = $mtls->url;
($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$url'; SET state_hub_events.tls_ca_file = '$d/ca.pem';");
like($err, qr/not published/, 'mutual TLS without a client certificate is refused');
($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$url'; SET state_hub_events.tls_ca_file = '$d/ca.pem'; "
      . "SET state_hub_events.tls_cert_file = '$d/client.pem'; SET state_hub_events.tls_key_file = '$d/client.key';");
is($err, '', 'mutual TLS with the client certificate publishes');
is(scalar($mtls->messages), 1, 'the event is in the stream');

unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no backend crashed at exit after using TLS');

$node->stop;
$tls->stop;
$mtls->stop;
done_testing();
