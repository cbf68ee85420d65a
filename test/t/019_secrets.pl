
# 019_secrets.pl
#    Who can read the connection settings, as the README's security section
#    states it: with the library preloaded a role without
#    pg_read_all_settings can read neither nats_url (URLs may carry
#    user:password@) nor any authentication or TLS setting, in any session;
#    without preloading, a session that has not loaded the library shows
#    values from the configuration files as placeholders to every role;
#    nats_url, password and token are shown masked to every role (members
#    of pg_read_all_settings and superusers included) and are not in
#    pg_settings; and a reload logs a changed value in the server log,
#    whatever the setting.

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
# PostgreSQL lets members of pg_read_all_settings (pg_monitor among them)
# read every setting: the secrets are shown masked to every role, the
# superuser included, and kept out of pg_settings (its reset_val column
# would bypass the mask); the rest stays readable to those roles
my $masked = 'nats://***@127.0.0.1:1';
is($node->safe_psql('postgres', 'SHOW state_hub_events.nats_url'), $masked,
    'the superuser sees nats_url with its credentials masked');
is($node->safe_psql('postgres', 'SHOW state_hub_events.password'), '********',
    'and the password masked');
is($node->safe_psql('postgres', q{SELECT current_setting('state_hub_events.token')}), '',
    'an unset token shows empty');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_settings
    WHERE name IN ('state_hub_events.nats_url', 'state_hub_events.password', 'state_hub_events.token')}),
    '0', 'none of the three is in pg_settings, even for the superuser');
$node->safe_psql('postgres', 'GRANT pg_monitor TO app');
($ret, $out, $err) = as_app('SHOW state_hub_events.nats_url');
is($out, $masked, 'a member of pg_monitor (pg_read_all_settings) sees nats_url masked');
($ret, $out, $err) = as_app(q{SELECT current_setting('state_hub_events.password')});
is($out, '********', 'and the password masked, through current_setting() too');
($ret, $out, $err) = as_app(q{SELECT string_agg(coalesce(setting, '') || ' ' || coalesce(reset_val, '') || ' ' || coalesce(boot_val, ''), ' ')
    FROM pg_settings WHERE name LIKE 'state_hub_events.%'});
unlike($out, qr/s3cret/, 'no secret in any column of pg_settings for pg_monitor');
($ret, $out, $err) = as_app('SHOW ALL');
unlike($out, qr/s3cret/, 'nor in SHOW ALL');
($ret, $out, $err) = as_app('SHOW state_hub_events."user"');
is($out, 'hub', 'the user name (no secret) stays readable to pg_read_all_settings');
$node->safe_psql('postgres', 'REVOKE pg_monitor FROM app');

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

# --- "***" is longer than a one-character token: every URL of a list is
# shown whole
$node->safe_psql('postgres', q{ALTER SYSTEM SET state_hub_events.nats_url = 'a@127.0.0.1:1,b@127.0.0.1:2,c@127.0.0.1:3'});
$node->reload;
my $shown = '';
for (1 .. 100)
{
    $shown = $node->safe_psql('postgres', 'SHOW state_hub_events.nats_url');
    last if $shown =~ /^\*\*\*\@/;
    select(undef, undef, undef, 0.1);
}
is($shown, '***@127.0.0.1:1,***@127.0.0.1:2,***@127.0.0.1:3',
    'a list of URLs with short tokens is shown masked and whole');

$node->stop;
done_testing();
