
# 005_auth.pl
#    Token and user/password authentication against nats-servers configured
#    for each; credentials never appear in messages, ping() or stats().

use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $tok = NatsServer->new(token => 'tok-s3cret')->start;
my $pw = NatsServer->new(user => 'hub', password => 'pw-s3cret')->start;
my $node = she_node('auth', undef, conf => q{
state_hub_events.connect_timeout = '1s'
state_hub_events.publish_timeout = '1s'
state_hub_events.retry_interval = '0'
});

sub try_publish
{
    my ($settings, $subject) = @_;
    $settings = she_apply_sets($node, $settings);
    my ($ret, $out, $err) = $node->psql('postgres',
        "$settings SELECT state_hub_events.publish('$subject') IS NOT NULL;");
    return ($ret, $err);
}

sub try_ping
{
    my ($settings) = @_;
    $settings = she_apply_sets($node, $settings);
    my ($ret, $out, $err) = $node->psql('postgres', "$settings SELECT state_hub_events.ping();");
    return ($ret, $out, $err);
}

# --- token
my $u = $tok->url;
my ($ret, $err) = try_publish("SET state_hub_events.nats_url = '$u';", 'org.t.notoken');
like($err, qr/not published/, 'token server: no token, the event is not published');
my ($r, $out, $perr) = try_ping("SET state_hub_events.nats_url = '$u'; SET state_hub_events.token = 'wrong';");
like($perr, qr/ERROR:.*cannot reach NATS.*[Aa]uthorization/, 'ping() with a wrong token says authorization failed');
unlike($perr, qr/wrong/, 'and does not print the token');
($ret, $err) = try_publish("SET state_hub_events.nats_url = '$u'; SET state_hub_events.token = 'tok-s3cret';", 'org.t.token');
is($err, '', 'token server: the right token publishes');
local $tok->{token} = 'tok-s3cret';
my @m = $tok->messages;
is($m[-1]{subject}, 'org.t.token', 'the event is in the token server\'s stream');
($r, $out, $perr) = try_ping("SET state_hub_events.nats_url = '$u'; SET state_hub_events.token = 'tok-s3cret';");
is($r, 0, 'ping() with the right token succeeds');
is(decode_json($out)->{stream_exists}, JSON::PP::true, 'and sees the stream');

# --- user and password, as settings and in the URL
$u = $pw->url;
($ret, $err) = try_publish("SET state_hub_events.nats_url = '$u'; SET state_hub_events.\"user\" = 'hub'; SET state_hub_events.password = 'nope';",
    'org.t.badpw');
like($err, qr/not published/, 'user/password server: a wrong password publishes nothing');
unlike($err, qr/nope/, 'and the WARNING does not print the password');
($ret, $err) = try_publish("SET state_hub_events.nats_url = '$u'; SET state_hub_events.\"user\" = 'hub'; SET state_hub_events.password = 'pw-s3cret';",
    'org.t.userpw');
is($err, '', 'user/password settings publish');
(my $with_creds = $u) =~ s{nats://}{nats://hub:pw-s3cret@};
($ret, $err) = try_publish("SET state_hub_events.nats_url = '$with_creds';", 'org.t.urlcreds');
is($err, '', 'credentials in the URL publish');
local $pw->{user} = 'hub';
local $pw->{password} = 'pw-s3cret';
@m = $pw->messages;
is_deeply([ map { $_->{subject} } @m ], [qw(org.t.userpw org.t.urlcreds)], 'both events are in the stream');

# --- credentials in URLs are masked in WARNINGs, ping() and stats()
(my $bad_creds = $u) =~ s{nats://}{nats://hub:leaked-pw@};
my ($ret2, $out2, $err2) = $node->psql('postgres', she_apply_sets($node, qq{
    SET state_hub_events.nats_url = '$bad_creds';}) . qq{
    SELECT state_hub_events.publish('org.t.masked') IS NOT NULL;
    SELECT last_error FROM state_hub_events.stats();
});
like($err2, qr/not published/, 'a wrong password in the URL: not published');
unlike($err2 . $out2, qr/leaked-pw/, 'the password in the URL appears neither in the WARNING nor in stats()');
like($err2, qr/\*\*\*\@127\.0\.0\.1/, 'the WARNING shows the URL masked');
($r, $out, $perr) = try_ping("SET state_hub_events.nats_url = '$bad_creds';");
like($perr, qr/cannot reach NATS at nats:\/\/\*\*\*\@127/, 'ping() masks the URL');
unlike($perr, qr/leaked-pw/, 'and never prints the password');

# --- publishing needs no stream-management rights
my $perm = NatsServer->new(user => 'admin', password => 'adminpw', auth_conf => q{
authorization {
  users = [
    { user: admin, password: adminpw }
    { user: pub, password: pubpw,
      permissions: { publish: ["org.>"], subscribe: ["_INBOX.>"] } }
  ]
}
})->start;
$perm->create_stream('ACTIVITY_EVENTS', 'org.>');
my $as_pub = "SET state_hub_events.nats_url = '@{[ $perm->url ]}'; SET state_hub_events.\"user\" = 'pub'; SET state_hub_events.password = 'pubpw';";
($ret, $err) = try_publish($as_pub, 'org.t.restricted');
is($err, '', 'a user allowed only to publish on org.> and read its inbox publishes');
@m = $perm->messages;
is_deeply([ map { $_->{subject} } @m ], ['org.t.restricted'], 'and the event is in the stream');
$perm->delete_stream;
($ret, $err) = try_publish($as_pub, 'org.t.nostream');
like($err, qr/1 of 1 events of the committed transaction were not published/,
    'that user cannot create a missing stream: the event is refused');
like($err, qr/creating stream "ACTIVITY_EVENTS"/, 'and the WARNING says the stream could not be created');
$perm->stop;

$node->stop;
$tok->stop;
$pw->stop;
done_testing();
