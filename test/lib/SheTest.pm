
# SheTest.pm
#    Shared pieces of the state_hub_events TAP tests: a PostgreSQL node with
#    the extension pointed at a NatsServer, and a strict envelope check.
#
# IDENTIFICATION
#    test/lib/SheTest.pm

package SheTest;

use strict;
use warnings;

use Exporter 'import';
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(she_node check_envelope wait_for_messages wait_until);

# A watchdog for the whole test file: after SHE_TEST_TIMEOUT seconds
# (default 900) it fails, says so, and exits; the END blocks then stop the
# PostgreSQL nodes and DESTROY the nats-servers.
my $file_timeout = $ENV{SHE_TEST_TIMEOUT} // 900;
$SIG{ALRM} = sub {
    fail("the test file finished within $file_timeout s (SHE_TEST_TIMEOUT)");
    done_testing();
    exit 1;
};
alarm($file_timeout) if $file_timeout > 0;

# she_node($name, $nats, preload => 0|1, conf => "extra lines")
# A started node, extension created in database postgres, nats_url set for
# the whole cluster (ALTER SYSTEM is what a DBA would do).
sub she_node
{
    my ($name, $nats, %opt) = @_;
    my $node = PostgreSQL::Test::Cluster->new($name);
    $node->init(allows_streaming => $opt{streaming} ? 1 : 0);
    my $conf = "log_min_messages = warning\n";
    $conf .= "shared_preload_libraries = 'state_hub_events'\n" if $opt{preload};
    $conf .= "state_hub_events.nats_url = '" . $nats->url . "'\n" if $nats;
    $conf .= $opt{conf} if $opt{conf};
    $node->append_conf('postgresql.conf', $conf);
    $node->start;
    $node->safe_psql('postgres', 'CREATE EXTENSION state_hub_events');
    return $node;
}

my $uuid_re = qr/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
my $ts_re = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

# check_envelope($msg, subject => ..., attributes => {...}, publisher => ...)
# The body has exactly the six keys, the header Nats-Msg-Id equals the id,
# the subject equals type, and the attributes are what was expected.
sub check_envelope
{
    my ($m, %exp) = @_;
    my $b = $m->{body};
    my $what = $exp{name} // "message $m->{seq}";
    is_deeply([ sort keys %$b ], [qw(attributes id publisher timestamp type version)],
        "$what: envelope has exactly the six keys");
    like($b->{id}, $uuid_re, "$what: id is a canonical lowercase uuid v4");
    is($m->{msg_id}, $b->{id}, "$what: Nats-Msg-Id header equals id");
    is($m->{expected_stream}, $exp{stream} // 'ACTIVITY_EVENTS', "$what: Nats-Expected-Stream header");
    is($b->{type}, $m->{subject}, "$what: type equals the subject");
    is($b->{subject} // $m->{subject}, $exp{subject}, "$what: subject") if $exp{subject};
    is($b->{version}, '1.0', "$what: version 1.0");
    like($b->{timestamp}, $ts_re, "$what: RFC 3339 UTC timestamp");
    is($b->{publisher}, $exp{publisher} // 'state-hub', "$what: publisher");
    is_deeply($b->{attributes}, $exp{attributes}, "$what: attributes")
      if exists $exp{attributes};
}

# wait_for_messages($nats, $n, $stream, subject => F, timeout => T): ask
# the stream's state until it holds at least $n messages (on F), for at
# most T seconds (default 60), then read them once.
sub wait_for_messages
{
    my ($nats, $n, $stream, %opt) = @_;
    return $nats->wait_for_messages($n, stream => $stream, %opt);
}

# wait_until($what, $timeout, sub { ... }): call the sub every 0.1 s until
# it returns true (errors count as false) or $timeout seconds have passed.
# Returns its last result; on timeout it says what was waited for (diag).
sub wait_until
{
    my ($what, $timeout, $code) = @_;
    my $deadline = time + $timeout;
    my $r;
    while (1)
    {
        $r = eval { $code->() };
        return $r if $r;
        last if time >= $deadline;
        usleep(100_000);
    }
    diag("timed out after $timeout s waiting for $what" . ($@ ? ": $@" : ''));
    return $r;
}

1;
