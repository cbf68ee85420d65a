
# 040_commit_warning_encoding.pl
#    The WARNING a COMMIT raises about lost events (after the commit record,
#    at RESOURCE_RELEASE_AFTER_LOCKS) quotes NATS's refusal, which names the
#    subject (UTF-8 on the wire since 1.3).  PostgreSQL converts every
#    message to the client's encoding when it sends it; a character the
#    client's encoding lacks makes that conversion ERROR -- after the commit
#    record, where an ERROR becomes "cannot abort transaction ..., it was
#    already committed" (PANIC: the whole server restarts).  Any role that
#    may publish picks its own client_encoding and subject.
#    Also: the refusal's text is cut at 199 bytes (SheBatchOutcome.texts),
#    which can split a multi-byte character: the COMMIT's WARNING, stats()
#    last_error (and in durable mode state_hub_events.rejected.error) then
#    hold invalid UTF-8.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new(user => 'admin', password => 'adminpw', auth_conf => q{
authorization {
  users = [
    { user: admin, password: adminpw }
    { user: hub, password: hubpw, permissions: { publish: { deny: ["org.t.deny.>"] } } }
  ]
}
})->start;
my $hub_url = 'nats://hub:hubpw@127.0.0.1:' . $nats->port;
my $node = she_node('warnenc', $nats, conf => qq{
state_hub_events.nats_url = '$hub_url'
state_hub_events.publish_timeout = '3s'
state_hub_events.retry_interval = '0'
});
$node->safe_psql('postgres', q{CREATE DATABASE u ENCODING 'UTF8' TEMPLATE template0});
$node->safe_psql('u', q{CREATE EXTENSION state_hub_events; CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA state_hub_events TO app;
GRANT EXECUTE ON FUNCTION state_hub_events.publish(text, jsonb) TO app;});
$node->safe_psql('u', q{SELECT state_hub_events.publish('org.t.ok')});
is($nats->wait_for_count(1, subject => 'org.t.ok'), 1, 'the stream exists');

# --- 1. truncation: the WARNING's detail is valid UTF-8
my ($ret, $out, $err) = $node->psql('u', q{
SELECT state_hub_events.publish('org.t.deny.' || repeat(chr(26085), 60) || 'x');
SELECT convert_from(pg_catalog.textsend(last_error), 'UTF8') IS NOT NULL FROM state_hub_events.stats();
SELECT state_hub_events.publish('org.t.deny.a' || repeat(chr(26085), 60) || 'x');
SELECT convert_from(pg_catalog.textsend(last_error), 'UTF8') IS NOT NULL FROM state_hub_events.stats();
SELECT state_hub_events.publish('org.t.deny.ab' || repeat(chr(26085), 60) || 'x');
SELECT convert_from(pg_catalog.textsend(last_error), 'UTF8') IS NOT NULL FROM state_hub_events.stats();
});
like($err, qr/Permissions Violation/, 'the refusals are WARNINGs at COMMIT');
is($ret, 0, 'stats().last_error is valid UTF-8 (the refusal text is not cut inside a character)')
  or diag($err);

# --- 2. a client encoding without the subject's characters
($ret, $out, $err) = $node->psql('u', q{
SET client_encoding = 'LATIN1';
SELECT state_hub_events.publish('org.t.deny.' || chr(26085)) IS NOT NULL;
}, extra_params => [ '-U', 'app' ]);
note("ret $ret; stderr: $err");
unlike($err, qr/PANIC|server closed the connection|terminated abnormally/,
    'a COMMIT whose WARNING the client cannot read does not crash the server');
unlike(slurp_file($node->logfile), qr/PANIC:/, 'no PANIC in the server log');

$node->stop('immediate', fail_ok => 1);
$nats->stop;
done_testing();
