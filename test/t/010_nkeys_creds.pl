
# 010_nkeys_creds.pl
#    nkey authentication (public key + seed file) against a server that
#    lists the nkey, and a creds file (user JWT + seed) against a server in
#    operator mode whose account has JetStream.  The identities are fixtures
#    made by test/fixtures/auth/generate.mjs.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $fx = File::Spec->rel2abs(dirname(__FILE__) . '/../fixtures/auth');
sub fixture { my $s = slurp_file("$fx/$_[0]"); chomp $s; return $s; }

my $node = she_node('nkeys', undef, conf => q{
state_hub_events.connect_timeout = '1s'
state_hub_events.publish_timeout = '2s'
state_hub_events.retry_interval = '0'
});

sub attempt
{
    my ($settings) = @_;
    $settings = she_apply_sets($node, $settings);
    my ($ret, $out, $err) = $node->psql('postgres',
        "$settings SELECT state_hub_events.publish('org.t.auth') IS NOT NULL;");
    my ($pret, $pout, $perr) = $node->psql('postgres', "$settings SELECT state_hub_events.ping();");
    return ($err, $pout, $perr);
}

# --- nkey
my $nkey_pub = fixture('nkey_user.pub');
my $nk = NatsServer->new(user => 'admin', password => 'adminpw', auth_conf => qq{
authorization {
  users = [
    { nkey: $nkey_pub }
    { user: admin, password: adminpw }
  ]
}
})->start;
my $u = $nk->url;
my ($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$u';");
like($err, qr/not published/, 'nkey server: without credentials nothing is published');
($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$u'; SET state_hub_events.nkey = '$nkey_pub'; "
      . "SET state_hub_events.nkey_seed_file = '$fx/nkey_user.seed';");
is($err, '', 'nkey + seed file publishes');
is(decode_json($ping)->{auth}, "nkey $nkey_pub", 'ping() names the nkey identity');
is_deeply([ map { $_->{subject} } $nk->messages ], ['org.t.auth'], 'the event is in the stream');
($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$u'; SET state_hub_events.nkey = '$nkey_pub'; "
      . "SET state_hub_events.nkey_seed_file = '$fx/no_such.seed';");
like($err, qr/not published/, 'a missing seed file: not published');
like($perr, qr/ERROR:/, 'and ping() raises an error');

# nats.c 3.4 signs about one server nonce in 300 so that the server refuses
# the nkey; the publisher then makes one more handshake (a new nonce).  It
# connects once per settings change: a changed seed file path makes a new
# connection, 60 times.
my ($r, $o, $e);
my $nfail = 0;
for my $i (1 .. 60)
{
    my $f = $i % 2 ? "$fx/nkey_user.seed" : "$fx/./nkey_user.seed";
    $nfail++ unless she_set_conn($node, nats_url => $u, nkey => $nkey_pub, nkey_seed_file => $f)
      =~ /publisher: connected/;
    ($r, $o, $e) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.nkey.many')});
    $nfail++ if $e ne '';
}
is($nfail, 0, '60 new nkey connections of the publisher, each with a publish, all succeed');
is(scalar(grep { $_->{subject} eq 'org.t.nkey.many' } $nk->messages), 60, 'and all 60 events are in the stream');
($r, $o, $e) = $node->psql('postgres', "SELECT (state_hub_events.ping())->>'auth';\n" x 200);
my @fails = ($e =~ /ERROR/g);
is(scalar @fails, 0, '200 consecutive ping() calls on the live nkey connection all succeed');
my @refused = grep { /authentication error - Nkey/ } split /^/, slurp_file($nk->{log});
note('nkey handshakes the server refused in this test, the deliberate ones included: ' . scalar(@refused));
$nk->stop;

# --- creds file, operator mode
my ($op, $sys, $sysjwt, $acc, $accjwt) =
  map { fixture($_) } qw(operator.jwt sys_account.pub sys_account.jwt account.pub account.jwt);
my $om = NatsServer->new(tool_creds => "$fx/user.creds", auth_conf => qq{
operator: "$fx/operator.jwt"
system_account: $sys
resolver: MEMORY
resolver_preload: {
  $sys: "$sysjwt"
  $acc: "$accjwt"
}
})->start;
$u = $om->url;
($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$u';");
like($err, qr/not published/, 'operator mode: without a creds file nothing is published');
($err, $ping, $perr) = attempt("SET state_hub_events.nats_url = '$u'; SET state_hub_events.creds_file = '$fx/user.creds';");
is($err, '', 'a creds file publishes (the stream is created in the account)');
is(decode_json($ping)->{stream_exists}, JSON::PP::true, 'ping() sees the stream');
is_deeply([ map { $_->{subject} } $om->messages ], ['org.t.auth'], 'the event is in the account\'s stream');
$om->stop;

$node->stop;
done_testing();
