# 086_hidden_file_paths.pl
#    creds_file, nkey_seed_file and the TLS files are hidden from roles
#    without pg_read_all_settings, but nats.c names a file it cannot open
#    ("error opening file '...'"), and that text reaches every committing
#    role: the COMMIT's WARNING and stats().last_error.  The path must read
#    "(hidden)" there (the publisher's LOG line says the same text).  A
#    long path is cut (nats.c keeps 255 bytes of a text, the WARNING's
#    buffer is no longer): the start of it that remains is hidden too.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $path = '/nonexistent-she-dir/hub-secret-7f3a.creds';
my $node = she_node('hidden_paths', $nats, conf => qq{
state_hub_events.creds_file = '$path'
state_hub_events.wait_for_ack = on
state_hub_events.publish_timeout = 2000
});

$node->safe_psql('postgres', q{
CREATE ROLE pub LOGIN;
GRANT USAGE ON SCHEMA state_hub_events TO pub;
GRANT EXECUTE ON FUNCTION state_hub_events.publish(text, jsonb) TO pub;
GRANT EXECUTE ON FUNCTION state_hub_events.stats() TO pub;
});

# the publisher has tried (and failed) to connect once the log says so
my $deadline = time + 60;
my $seen = 0;
while (time < $deadline)
{
    my $log = slurp_file($node->logfile);
    if ($log =~ /error opening file/) { $seen = 1; last; }
    select(undef, undef, undef, 0.1);
}
ok($seen, 'the publisher could not open the creds file');

my ($ret, $out, $err) = $node->psql('postgres',
    "SET ROLE pub;\nSELECT state_hub_events.publish('org.t.one') IS NOT NULL;");
like($err, qr/WARNING:/, 'the commit warns that its event was not published');
unlike($err, qr/hub-secret-7f3a/, 'the WARNING does not name the creds file');
like($err, qr/\(hidden\)/, 'it says (hidden) where nats.c named the file');

my $last = $node->safe_psql('postgres',
    'SET ROLE pub; SELECT last_error FROM state_hub_events.stats() WHERE scope = \'cluster\'');
unlike($last, qr/hub-secret-7f3a/, 'stats().last_error does not name it');
isnt($last, '', 'stats().last_error is set');
note("WARNING: $err");
note("last_error: $last");

# a path too long for the texts: they end with a start of it
my $long = '/nonexistent-she-dir/longprefix-9c2e-' . ('d' x 220) . '.creds';
$node->safe_psql('postgres',
    "ALTER SYSTEM SET state_hub_events.creds_file = '$long'; SELECT pg_reload_conf();");
$deadline = time + 60;
my $cut_err = '';
while (time < $deadline)
{
    # the first path's text ends with "No such file or directory"; the
    # long one's is cut before it
    ($ret, $out, $err) = $node->psql('postgres',
        "SET ROLE pub;\nSELECT state_hub_events.publish('org.t.two') IS NOT NULL;");
    if ($err =~ /error opening file/ && $err !~ /No such file/) { $cut_err = $err; last; }
    select(undef, undef, undef, 0.1);
}
like($cut_err, qr/error opening file/, 'the publisher could not open the long path');
unlike($cut_err, qr/longprefix-9c2e/, 'the WARNING does not name the start of a cut path');
$last = $node->safe_psql('postgres',
    'SET ROLE pub; SELECT last_error FROM state_hub_events.stats() WHERE scope = \'cluster\'');
unlike($last, qr/longprefix-9c2e/, 'nor does stats().last_error');
note("WARNING: $cut_err");
note("last_error: $last");

$node->stop;
$nats->stop;
done_testing();
