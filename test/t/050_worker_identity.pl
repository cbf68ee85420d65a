# 050_worker_identity.pl
#    The durable worker runs as the bootstrap superuser, and neither the
#    database's owner nor any other role can stop it:
#    - the owner (not a superuser) may ALTER DATABASE ... SET role or
#      session_authorization, which every session of the database takes,
#      the worker's included: it would read the outbox as the owner, fail
#      and start again forever;
#    - DROP DATABASE, ALTER DATABASE ... RENAME and CREATE DATABASE ...
#      TEMPLATE of the served database stop the worker first; a role that
#      may not run them (any role that can log in) must not stop it by
#      trying.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('worker_identity', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.retry_interval = '100ms'
});

# tester: a superuser whose own settings undo the database's (the worker
# connects as the bootstrap superuser, which keeps the database's)
$node->safe_psql('postgres', q{
CREATE ROLE dbowner LOGIN;
CREATE ROLE mallory LOGIN CREATEDB;
ALTER DATABASE postgres OWNER TO dbowner;
CREATE ROLE tester SUPERUSER LOGIN;
ALTER ROLE tester SET session_authorization = 'tester';
ALTER ROLE tester SET role = 'none';
});
sub q_ { return $node->safe_psql('postgres', $_[0], extra_params => [ '-U', 'tester' ]); }

# a role that may not drop, rename or copy the database does not stop the
# worker by trying
q_("SELECT state_hub_events.publish('org.t.wi', '{\"n\": 0}')");
my @msgs = wait_for_messages($nats, 1, 'ACTIVITY_EVENTS');
is(scalar @msgs, 1, 'the worker runs');
my $pid = q_('SELECT worker_pid FROM state_hub_events.worker_status()');
ok($pid =~ /^\d+$/, "the worker's pid is known ($pid)");
for my $sql ('DROP DATABASE postgres', 'ALTER DATABASE postgres RENAME TO other',
    'CREATE DATABASE copy TEMPLATE postgres', 'ALTER DATABASE postgres SET TABLESPACE pg_default')
{
    my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', 'mallory' ]);
    like($err, qr/must be owner|permission denied/, "mallory: $sql is refused");
    is(q_('SELECT worker_pid FROM state_hub_events.worker_status()'), $pid,
        "mallory: $sql leaves the worker running");
}

# the owner's role and session_authorization for the database's sessions
$node->safe_psql('postgres', q{
SET ROLE dbowner;
ALTER DATABASE postgres SET role = 'dbowner';
}, extra_params => [ '-U', 'tester' ]);
$node->restart;
is(q_('SELECT current_user'), 'tester', 'tester keeps its identity');
q_("SELECT state_hub_events.publish('org.t.wi', '{\"n\": $_}')") for 1 .. 3;
@msgs = wait_for_messages($nats, 4, 'ACTIVITY_EVENTS', timeout => 30);
is_deeply([ map { $_->{body}{attributes}{n} } @msgs ], [ 0 .. 3 ],
    'ALTER DATABASE SET role: the worker publishes as before');
is(q_('SELECT last_error FROM state_hub_events.worker_status()'), '', 'no error recorded');

$node->safe_psql('postgres', q{
SET ROLE dbowner;
ALTER DATABASE postgres RESET role;
ALTER DATABASE postgres SET session_authorization = 'dbowner';
}, extra_params => [ '-U', 'tester' ]);
$node->restart;
q_("SELECT state_hub_events.publish('org.t.wi', '{\"n\": $_}')") for 4 .. 6;
@msgs = wait_for_messages($nats, 7, 'ACTIVITY_EVENTS', timeout => 30);
is_deeply([ map { $_->{body}{attributes}{n} } @msgs ], [ 0 .. 6 ],
    'ALTER DATABASE SET session_authorization: the worker publishes as before');
is(q_('SELECT last_error FROM state_hub_events.worker_status()'), '', 'no error recorded');
ok(wait_until('the outbox is empty', 60, sub {
    q_('SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'and the worker deleted them from the outbox');

$node->stop;
$nats->stop;
done_testing();
