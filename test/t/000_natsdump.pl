
# 000_natsdump.pl
#    The reader the other tests rely on (test/natsdump and NatsServer.pm)
#    reads back exactly what a check asks for: counts from the stream's
#    state, messages narrowed by subject, start sequence and limit, a large
#    stream in full even when its reader pauses, and every wait bounded.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use NatsServer;
use SheTest;

my $n = 100_000;
my $nats = NatsServer->new->start;
$nats->create_stream('ACTIVITY_EVENTS', 'org.>');
# org.t.a gets the odd sequences, org.t.b the even ones; body {"n": seq}
$nats->_run('fill', 'ACTIVITY_EVENTS', 'org.t.a,org.t.b', $n);

# --- counts come from the stream's state
is($nats->count, $n, "count: the stream holds $n messages");
is($nats->count(undef, subject => 'org.t.a'), $n / 2, 'count on a subject');
is($nats->count(undef, subject => 'org.t.*'), $n, 'count on a wildcard');
is($nats->count(undef, subject => 'org.none'), 0, 'count on a subject without messages');
is($nats->count('NO_SUCH_STREAM'), 0, 'count of a missing stream is 0');

my $t0 = time;
is($nats->wait_for_count($n, subject => 'org.t.b', timeout => 2), $n / 2,
    'wait_for_count gives up at its deadline with the count it saw (a diag says so)');
cmp_ok(time - $t0, '<', 2 + 5, 'within the deadline (2 s), not much later');
is($nats->wait_for_count($n / 2, subject => 'org.t.b', timeout => 2), $n / 2,
    'wait_for_count returns as soon as the count is there');

# --- messages narrowed by subject, start sequence and limit
my @m = $nats->messages(undef, undef, subject => 'org.t.b', limit => 5);
is_deeply([ map { $_->{seq} } @m ], [ 2, 4, 6, 8, 10 ], 'subject and limit: the first five on org.t.b');
is_deeply([ map { $_->{body}{n} } @m ], [ 2, 4, 6, 8, 10 ], 'with their bodies');
is_deeply([ map { $_->{subject} } @m ], [ ('org.t.b') x 5 ], 'and nothing else');
@m = $nats->messages(undef, $n - 9, subject => 'org.t.a');
is_deeply([ map { $_->{seq} } @m ], [ map { $n - 9 + 2 * $_ } 0 .. 4 ],
    'start sequence and subject: the tail of org.t.a');
@m = $nats->messages(undef, $n - 1);
is_deeply([ map { $_->{seq} } @m ], [ $n - 1, $n ], 'a start sequence alone: the last two');
is_deeply([ map { $_->{seq} } $nats->_parse($nats->_run('dump', 'ACTIVITY_EVENTS', $n)) ], [$n],
    'FROM_SEQ as a positional argument still works');
$t0 = time;
@m = $nats->messages(undef, undef, subject => 'org.none');
is(scalar @m, 0, 'a subject without messages: none');
cmp_ok(time - $t0, '<', 4, 'and no wait for messages that are not there');
is(scalar($nats->messages(undef, $n + 1)), 0, 'past the last sequence: none');
my $env = $nats->_run('envelopes', 'ACTIVITY_EVENTS', '--subject', 'org.t.a', '--limit', 3);
is(scalar(split /\n/, $env), 3, 'envelopes honour the limit too');

my ($out, $err) = ('', '');
IPC::Run::run([ NatsServer::natsdump(), $nats->url, 'dump', 'ACTIVITY_EVENTS', '--bogus', 1 ],
    '>', \$out, '2>', \$err);
is($? >> 8, 3, 'an unknown option is a usage error (exit 3)');
like($err, qr/unknown option "--bogus"/, 'that says which');

# --- the whole stream in one read, though its reader pauses: every message,
# in order, none dropped (a slow consumer would drop some)
my ($buf, $rc) = ('', 0);
{
    my $in = '';
    my $h = IPC::Run::start([ NatsServer::natsdump(), $nats->url, 'dump', 'ACTIVITY_EVENTS' ],
        '<', \$in, '>', \$buf, '2>', \$err, IPC::Run::timeout(120));
    sleep 3;    # the reader does not read: natsdump and the server must wait for it
    $h->finish;
    $rc = $? >> 8;
}
is($rc, 0, 'a paused reader: natsdump finishes') or diag($err);
# (a light parse: JSON::PP would take seconds for so many lines)
my @all = map { /^\{"seq":(\d+),"subject":"org\.t\.[ab]",.*"raw":"\{\\"n\\": (\d+)\}"\}$/ ? [ $1, $2 ] : ['?'] }
  split /\n/, $buf;
is(scalar @all, $n, "all $n messages");
my $bad = grep { $all[$_][0] ne $_ + 1 || $all[$_][1] ne $_ + 1 } 0 .. $#all;
is($bad, 0, 'each once, in stream order, with its body');

$nats->stop;
done_testing();
