
# 090_contract_surface.pl
#    The SQL surface and the settings as the user-facing contract names
#    them, checked on a preloaded server: each function's signature, result,
#    labels and who may EXECUTE it; each setting's default, and that only a
#    superuser can change it (the connection settings only server-wide).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use SheTest;

my $node = she_node('contract', undef);
$node->safe_psql('postgres', 'CREATE ROLE she_app LOGIN');

# function => [arguments, result, volatility, parallel, strict]
my %functions = (
    'publish(text,jsonb)' =>
      [ q{subject text, attributes jsonb DEFAULT '{}'::jsonb}, 'uuid', 'v', 'u', 'f' ],
    'emit()'    => [ '', 'trigger', 'v', 'u', 'f' ],
    'pending()' => [ '', 'TABLE(id uuid, subject text, attributes jsonb)', 'v', 'u', 't' ],
    'ping()'    => [ '', 'jsonb', 'v', 'u', 't' ],
);
for my $f (sort keys %functions)
{
    my $row = $node->safe_psql('postgres', qq{
        SELECT concat_ws('|', pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
                         p.provolatile, p.proparallel, p.proisstrict)
          FROM pg_proc p WHERE p.oid = 'state_hub_events.$f'::regprocedure});
    is($row, join('|', @{ $functions{$f} }), "$f: signature, result and labels as the contract states");
}

# EXECUTE on publish(), emit() and ping() is not PUBLIC's (nor pending()'s)
for my $f ('publish(text,jsonb)', 'emit()', 'ping()', 'pending()')
{
    is($node->safe_psql('postgres',
            qq{SELECT has_function_privilege('she_app', 'state_hub_events.$f', 'EXECUTE')}),
        'f', "$f: an application role may not EXECUTE it");
}

# stats() carries at least the contract's counters
my $cols = $node->safe_psql('postgres', q{
    SELECT string_agg(c, ',' ORDER BY c) FROM unnest(ARRAY['published', 'failed', 'unconfirmed',
           'dropped', 'last_error', 'last_error_at', 'commit_publish_p50_ms',
           'commit_publish_p99_ms', 'scope']) c
     WHERE c = ANY ((SELECT proargnames FROM pg_proc
                      WHERE oid = 'state_hub_events.stats()'::regprocedure)::text[])});
is($cols, 'commit_publish_p50_ms,commit_publish_p99_ms,dropped,failed,last_error,last_error_at,'
      . 'published,scope,unconfirmed', 'stats(): the contract\'s columns');

# the contract's settings table: name => default as SHOW prints it
my %defaults = (
    nats_url => '', stream => 'ACTIVITY_EVENTS', stream_subjects => 'org.>',
    publisher => 'state-hub', publish_timeout => '2s', wait_for_ack => 'on',
    connect_timeout => '1s', delivery => 'immediate', token => '', user => '',
    password => '', creds_file => '', nkey => '', nkey_seed_file => '',
    tls_ca_file => '', tls_cert_file => '', tls_key_file => '',
    max_event_bytes => '1020kB', create_stream => 'on', stream_replicas => '1',
    stream_max_age => '0', duplicate_window => '2min');
my %server_wide = map { $_ => 1 } qw(nats_url connect_timeout token user password creds_file
  nkey nkey_seed_file tls_ca_file tls_cert_file tls_key_file);
for my $name (sort keys %defaults)
{
    is($node->safe_psql('postgres', qq{SHOW state_hub_events."$name"}), $defaults{$name},
        "$name: the contract's default");
    # a value SET accepts when it may be set at all
    my $value = $name eq 'delivery' ? 'durable' : $defaults{$name} eq '' ? 'x' : $defaults{$name};
    my ($ret, $out, $err) = $node->psql('postgres',
        qq{\\set VERBOSITY verbose
           SET ROLE she_app; SET state_hub_events."$name" = '$value'});
    like($err, $server_wide{$name} ? qr/ERROR:  55P02:/ : qr/ERROR:  42501:/,
        "$name: an application role cannot set it");
    ($ret, $out, $err) = $node->psql('postgres',
        qq{\\set VERBOSITY verbose
           SET state_hub_events."$name" = '$value'});
    if ($server_wide{$name})
    {
        like($err, qr/ERROR:  55P02:/, "$name: server-wide (sighup), not SET in a session");
    }
    else
    {
        is($ret, 0, "$name: a superuser may SET it in a session");
    }
}

$node->stop;
done_testing();
