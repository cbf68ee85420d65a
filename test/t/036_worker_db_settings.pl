# 036_worker_db_settings.pl
#    The durable worker serves one database and runs as a superuser; the
#    database's owner (not a superuser) may ALTER DATABASE ... SET settings
#    that would make every read or delete of the worker fail: read-only
#    default transactions, statement and lock timeouts, serializable
#    isolation.  The worker pins them, so delivery goes on.  And an ERROR
#    that stops the worker is its last_error in worker_status().

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('worker_settings', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.retry_interval = '100ms'
});

# tester: a superuser whose own settings undo the database's, for this
# test's sessions (the worker connects as the bootstrap superuser)
$node->safe_psql('postgres', q{
CREATE ROLE dbowner LOGIN;
ALTER DATABASE postgres OWNER TO dbowner;
CREATE ROLE tester SUPERUSER LOGIN;
ALTER ROLE tester SET default_transaction_read_only = off;
ALTER ROLE tester SET default_transaction_isolation = 'read committed';
ALTER ROLE tester SET statement_timeout = 0;
ALTER ROLE tester SET lock_timeout = 0;
ALTER ROLE tester SET idle_in_transaction_session_timeout = 0;
SET ROLE dbowner;
ALTER DATABASE postgres SET default_transaction_read_only = on;
ALTER DATABASE postgres SET default_transaction_isolation = 'serializable';
ALTER DATABASE postgres SET statement_timeout = '1ms';
ALTER DATABASE postgres SET lock_timeout = '1ms';
ALTER DATABASE postgres SET idle_in_transaction_session_timeout = '1ms';
});
sub q_ { return $node->safe_psql('postgres', $_[0], extra_params => [ '-U', 'tester' ]); }

# the worker starts again with the database's settings
$node->restart;
q_("SELECT state_hub_events.publish('org.t.ws', '{\"n\": $_}')") for 1 .. 5;
my @msgs = wait_for_messages($nats, 5, 'ACTIVITY_EVENTS');
is_deeply([ map { $_->{body}{attributes}{n} } @msgs ], [ 1 .. 5 ],
    'the worker published the five events in order despite the database\'s settings');
ok(wait_until('the outbox is empty', 60, sub {
    q_('SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'and deleted them from the outbox');
is(q_('SELECT last_error IS NULL FROM state_hub_events.worker_status()'), 't', 'no error recorded');

# a worker that stops on an ERROR says why in worker_status()
q_('ALTER TABLE state_hub_events.outbox RENAME COLUMN subject TO subject_gone');
ok(wait_until('the worker\'s error in worker_status()', 60, sub {
    q_('SELECT last_error FROM state_hub_events.worker_status()') =~ /the worker stopped: .*subject/ }),
    'an ERROR that stopped the worker is its last_error');
note(q_('SELECT last_error FROM state_hub_events.worker_status()'));
q_('ALTER TABLE state_hub_events.outbox RENAME COLUMN subject_gone TO subject');
q_("SELECT state_hub_events.publish('org.t.ws', '{\"n\": 6}')");
@msgs = wait_for_messages($nats, 6, 'ACTIVITY_EVENTS');
is($msgs[-1]{body}{attributes}{n}, 6, 'the restarted worker publishes again');

$node->stop;
$nats->stop;
done_testing();
