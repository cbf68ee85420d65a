
# 019_secrets.pl
#    Who can read the connection settings, as the README's security section
#    states it: with the library preloaded a role without
#    pg_read_all_settings can read neither nats_url (URLs may carry
#    user:password@) nor any authentication or TLS setting, in any session;
#    without preloading, a session that has not loaded the library shows
#    values from the configuration files as placeholders to every role; and
#    a reload logs a changed value in the server log, whatever the setting.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use SheTest;

my $url = 'nats://hub:s3cret-pw@127.0.0.1:1';
my $node = she_node('secrets', undef, preload => 0, conf => qq{
state_hub_events.nats_url = '$url'
state_hub_events.user = 'hub'
state_hub_events.password = 'pw-s3cret'
});
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN');

# Run one statement as "app" in a fresh session; return (ret, stdout, stderr).
sub as_app
{
    my ($sql) = @_;
    my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', 'app' ]);
    return ($ret, $out, $err);
}

# --- not preloaded: the placeholders of a fresh session are readable by all
my ($ret, $out, $err) = as_app('SHOW state_hub_events.password');
is($out, 'pw-s3cret',
    'not preloaded: a session that has not loaded the library shows a secret from postgresql.conf (the README warns)');

# --- preloaded: hidden in every session, including fresh ones
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'state_hub_events'\n");
$node->restart;

for my $name (qw(nats_url user password token creds_file nkey nkey_seed_file
    tls_ca_file tls_cert_file tls_key_file))
{
    # (the wording differs between PostgreSQL versions: the SQLSTATE, and
    # the role that would be needed, named in the message up to 15 and in
    # the detail from 16)
    ($ret, $out, $err) = as_app("\\set VERBOSITY verbose\nSHOW state_hub_events.\"$name\"");
    isnt($ret, 0, "preloaded: app cannot SHOW $name");
    like($err, qr/ERROR:  42501:/, "$name: insufficient_privilege");
    like($err, qr/pg_read_all_settings/, "$name: names pg_read_all_settings");
}
($ret, $out, $err) = as_app(qq{\\set VERBOSITY verbose\nSELECT current_setting('state_hub_events.nats_url')});
isnt($ret, 0, 'nor read nats_url through current_setting()');
like($err, qr/ERROR:  42501:/, 'current_setting(): insufficient_privilege');
($ret, $out, $err) = as_app(q{SELECT count(*) FROM pg_settings
    WHERE name IN ('state_hub_events.nats_url', 'state_hub_events.user', 'state_hub_events.password')});
is($out, '0', 'nor find them in pg_settings');
($ret, $out, $err) = as_app('SHOW ALL');
unlike($out, qr/s3cret/, 'SHOW ALL shows no secret');
is($node->safe_psql('postgres', 'SHOW state_hub_events.nats_url'), $url, 'the superuser reads it');
$node->safe_psql('postgres', 'GRANT pg_read_all_settings TO app');
($ret, $out, $err) = as_app('SHOW state_hub_events.nats_url');
is($out, $url, 'so does a member of pg_read_all_settings');
$node->safe_psql('postgres', 'REVOKE pg_read_all_settings FROM app');

# --- a reload writes the new value to the server log (PostgreSQL's own
# message, for every setting): the README says so
my $offset = -s $node->logfile;
$node->safe_psql('postgres', q{ALTER SYSTEM SET state_hub_events.nats_url = 'nats://hub:n3w-pw@127.0.0.1:1'});
$node->reload;
my $logged = 0;
for (1 .. 100)
{
    $logged = slurp_file($node->logfile, $offset) =~
      /parameter "state_hub_events\.nats_url" changed to "nats:\/\/hub:n3w-pw\@127\.0\.0\.1:1"/;
    last if $logged;
    select(undef, undef, undef, 0.1);
}
ok($logged, 'a reload logs the changed URL, password included');

$node->stop;
done_testing();
