
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

our @EXPORT = qw(she_node she_set_conn she_apply_sets check_envelope wait_for_messages wait_until);

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

# she_node($name, $nats, preload => 1|0, conf => "extra lines")
# A started node, extension created in database postgres, nats_url set for
# the whole cluster.  Preloaded unless preload => 0: publishing needs it.
sub she_node
{
    my ($name, $nats, %opt) = @_;
    my $node = PostgreSQL::Test::Cluster->new($name);
    $node->init(allows_streaming => $opt{streaming} ? 1 : 0);
    my $conf = "log_min_messages = warning\n";
    $conf .= "shared_preload_libraries = 'state_hub_events'\n" if $opt{preload} // 1;
    $conf .= "state_hub_events.nats_url = '" . $nats->url . "'\n" if $nats;
    $conf .= $opt{conf} if $opt{conf};
    $node->append_conf('postgresql.conf', $conf);
    $node->start;
    $node->safe_psql('postgres', 'CREATE EXTENSION state_hub_events');
    return $node;
}

# she_set_conn($node, nats_url => ..., token => ..., ...)
# Change the publisher's connection settings the way a DBA does (ALTER
# SYSTEM, reload; an undef value resets) and wait until the publisher
# has applied them: it logs its connection state after every reload.
# Returns that log line.
sub she_set_conn
{
    my ($node, %set) = @_;
    my $sql = '';
    for my $k (sort keys %set)
    {
        my $v = $set{$k};
        $sql .= defined $v
          ? "ALTER SYSTEM SET state_hub_events.\"$k\" = '$v';\n"
          : "ALTER SYSTEM RESET state_hub_events.\"$k\";\n";
    }
    my $offset = -s $node->logfile;
    $node->safe_psql('postgres', $sql . 'SELECT pg_reload_conf();');
    $node->wait_for_log(qr/state_hub_events publisher: (?:connected to|not connected to) NATS/, $offset);
    my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
    my ($line) = $log =~ /(state_hub_events publisher: (?:connected to|not connected to) NATS[^\n]*)/;
    return $line;
}

my @conn_settings = qw(nats_url token user password creds_file nkey nkey_seed_file
  tls_ca_file tls_cert_file tls_key_file tls_handshake_first);

# she_apply_sets($node, "SET state_hub_events.nats_url = '...'; SET ...;")
# The connection settings among those SETs become the publisher's (the
# others reset; see she_set_conn); returns the SQL left over.
sub she_apply_sets
{
    my ($node, $sql) = @_;
    my %set = map { $_ => undef } @conn_settings;
    my $conn_re = join('|', @conn_settings);
    $sql =~ s/SET state_hub_events\."?($conn_re)"? = '([^']*)';\s*/$set{$1} = $2; ''/ge;
    she_set_conn($node, %set);
    return $sql;
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
