
# 020_url_masking.pl
#    Credentials in state_hub_events.nats_url never show, whatever they
#    contain: nats.c ends a URL's user information at its LAST '@', so a
#    password or token may hold '@' (and ':').  Checked against a real
#    nats-server that refuses the password and against closed ports, in the
#    WARNING, stats().last_error, backlog().last_error, ping() and the
#    server log (the publisher's and the worker's lines); a list of URLs
#    (with and without scheme, a token, an IPv6 host) is masked URL by URL.

use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

# Every piece of user information below is a distinctive 3-character run,
# so the checks can look for each piece, not only for the whole secret.
my @pieces = qw(Uq7 Gd1 Ok2 Pw3 Xw5 Yv6 Zt8 Tk4 Tk9);
my $good = 'Gd1@Ok2@Pw3';    # the server's password
my $wrong = 'Xw5@Yv6:Zt8';    # refused ('@' and ':' inside)

my $nats = NatsServer->new(user => 'Uq7', password => $good)->start;
my $port = $nats->port;
my $closed1 = PostgreSQL::Test::Cluster::get_free_port();
my $closed2 = PostgreSQL::Test::Cluster::get_free_port();
my $refused_url = "nats://Uq7:$wrong\@127.0.0.1:$port";

# Each URL is written to postgresql.conf and the node restarted: a reload
# would make PostgreSQL itself log the new value (see README, Security), and
# ALTER SYSTEM would log the statement; this test is about what the
# extension prints.
my $node = she_node('masking', undef, conf => qq{
state_hub_events.nats_url = '$refused_url'
state_hub_events.database = 'postgres'
state_hub_events.connect_timeout = '1s'
state_hub_events.publish_timeout = '1s'
state_hub_events.retry_interval = '0'
});

sub no_piece
{
    my ($text, $what) = @_;
    my @seen = grep { index($text, $_) >= 0 } @pieces;
    is_deeply(\@seen, [], "no part of any credential in $what");
}

# Restart with another nats_url; returns the publisher's log line about it.
sub use_url
{
    my ($url) = @_;
    $node->append_conf('postgresql.conf', "state_hub_events.nats_url = '$url'\n");
    my $offset = -s $node->logfile;
    $node->restart;
    $node->wait_for_log(qr/state_hub_events publisher: (?:connected to|not connected to) NATS/, $offset);
    my ($line) = slurp_file($node->logfile, $offset)
      =~ /(state_hub_events publisher: (?:connected to|not connected to) NATS[^\n]*)/;
    return $line;
}

sub psql_out
{
    my ($sql, %set) = @_;
    local $ENV{PGOPTIONS} = join(' ', map { "-c state_hub_events.$_=$set{$_}" } sort keys %set);
    my ($ret, $out, $err) = $node->psql('postgres', $sql);
    return ($ret, $out, $err);
}

# --- the server refuses the password
my $line;
my ($ret, $out, $err);
$node->wait_for_log(qr/state_hub_events publisher: (?:connected to|not connected to) NATS/, 0);
($line) = slurp_file($node->logfile) =~ /(state_hub_events publisher: (?:connected to|not connected to) NATS[^\n]*)/;
like($line, qr/not connected to NATS: .*nats:\/\/\*\*\*\@127\.0\.0\.1:$port\b/,
    "a refused password: the publisher's log line shows the URL masked");
no_piece($line, "the publisher's log line");
($ret, $out, $err) = psql_out(q{
    SELECT state_hub_events.publish('org.t.mask.refused') IS NOT NULL;
    SELECT last_error FROM state_hub_events.stats();
});
like($err, qr/WARNING: [^\n]*not published\nDETAIL: [^\n]*nats:\/\/\*\*\*\@127\.0\.0\.1:$port\b/,
    'the WARNING shows the URL masked');
like($err, qr/[Aa]uthorization/, 'and says why');
like($out, qr/nats:\/\/\*\*\*\@127\.0\.0\.1:$port\b/, 'stats().last_error shows the URL masked');
no_piece($err, 'the WARNING');
no_piece($out, 'stats().last_error');

($ret, $out, $err) = psql_out(q{SELECT state_hub_events.ping();});
like($err, qr/ERROR:  cannot reach NATS at nats:\/\/\*\*\*\@127\.0\.0\.1:$port:/,
    'ping() names the URL masked');
no_piece($err, "ping()'s error");

# --- durable delivery: the worker's errors go to backlog() and the log
($ret, $out, $err) = psql_out(q{SELECT state_hub_events.publish('org.t.mask.durable') IS NOT NULL;},
    delivery => 'durable');
is($err, '', 'durable: the event is accepted into the outbox');
ok($node->poll_query_until('postgres',
        'SELECT last_error IS NOT NULL FROM state_hub_events.backlog()'),
    'the worker reports its failure in backlog()');
$out = $node->safe_psql('postgres', 'SELECT last_error FROM state_hub_events.backlog()');
like($out, qr/nats:\/\/\*\*\*\@127\.0\.0\.1:$port\b/, 'backlog().last_error shows the URL masked');
no_piece($out, 'backlog().last_error');
ok($node->wait_for_log(qr/state_hub_events worker: [^\n]*not acknowledged[^\n]*\n[^\n]*DETAIL: [^\n]*nats:\/\/\*\*\*\@127\.0\.0\.1:$port\b/, 0),
    "the worker's log line shows the URL masked");

# --- nothing listens: the right password, a closed port
$line = use_url("nats://Uq7:$good\@127.0.0.1:$closed1");
like($line, qr/nats:\/\/\*\*\*\@127\.0\.0\.1:$closed1\b/, "a closed port: the publisher's log line shows the URL masked");
($ret, $out, $err) = psql_out(q{
    SELECT state_hub_events.publish('org.t.mask.closed') IS NOT NULL;
    SELECT last_error FROM state_hub_events.stats();
});
like($err, qr/WARNING: [^\n]*not published\nDETAIL: [^\n]*nats:\/\/\*\*\*\@127\.0\.0\.1:$closed1\b/,
    'an unreachable server: the WARNING shows the URL masked');
like($out, qr/nats:\/\/\*\*\*\@127\.0\.0\.1:$closed1\b/, 'and so does stats().last_error');
no_piece($line . $err . $out, 'the log line, the WARNING and stats() (closed port)');

# --- a list: a token with '@' and no scheme, a password URL with an IPv6 host
$line = use_url("Tk4\@Tk9\@127.0.0.1:$closed1,tls://Uq7:$wrong\@[::1]:$closed2");
($ret, $out, $err) = psql_out(q{
    SELECT state_hub_events.publish('org.t.mask.list') IS NOT NULL;
    SELECT last_error FROM state_hub_events.stats();
});
like($err, qr/DETAIL: [^\n]* at \*\*\*\@127\.0\.0\.1:$closed1,tls:\/\/\*\*\*\@\[::1\]:$closed2\b/,
    'a list of URLs: each one masked, hosts and ports kept');
no_piece($line . $err . $out, 'the log line, the WARNING and stats() for a list');

# --- positive control: nats.c splits at the last '@', so this URL works
$line = use_url("nats://Uq7:$good\@127.0.0.1:$port");
is($line, "state_hub_events publisher: connected to NATS at nats://***\@127.0.0.1:$port",
    "a password holding '\@' in the URL connects; the log line shows the URL masked");
($ret, $out, $err) = psql_out(q{SELECT state_hub_events.publish('org.t.mask.ok') IS NOT NULL;});
is($err, '', 'and publishes');
{
    local $nats->{user} = 'Uq7';
    local $nats->{password} = $good;
    my @m = wait_for_messages($nats, 2);
    is_deeply([ sort map { $_->{subject} } @m ], [ 'org.t.mask.durable', 'org.t.mask.ok' ],
        'the event is in the stream, and so is the durable one the worker kept');
}
($ret, $out, $err) = psql_out(q{SELECT state_hub_events.ping()->>'connected_url';});
is($out, "nats://***\@127.0.0.1:$port", "ping()'s connected_url shows the scheme and host only");

# --- the whole server log
my $log = slurp_file($node->logfile);
like($log, qr/WARNING: [^\n]*not published\n[^\n]*DETAIL: [^\n]*nats:\/\/\*\*\*\@127\.0\.0\.1:$port\b/,
    "the sessions' WARNINGs are in the log, masked");
no_piece($log, 'the server log');

$node->stop;
$nats->stop;
done_testing();
