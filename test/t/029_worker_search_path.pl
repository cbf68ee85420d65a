# 029_worker_search_path.pl
#    The durable worker runs as a superuser in the database it serves: a
#    search_path the database's (non-superuser) owner sets for the database
#    must not make the worker's statements run the owner's operators.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use SheTest;

my $node = she_node('worker_sp', undef, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.retry_interval = '100ms'
});

$node->safe_psql('postgres', q{
CREATE ROLE dbowner LOGIN;
ALTER DATABASE postgres OWNER TO dbowner;
CREATE SCHEMA evil AUTHORIZATION dbowner;
SELECT state_hub_events.publish('org.t.w');
});
$node->safe_psql('postgres', q{
SET ROLE dbowner;
CREATE FUNCTION evil.le(a int8, b int8) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  IF current_user <> 'dbowner' THEN
    EXECUTE 'ALTER ROLE dbowner SUPERUSER';
  END IF;
  RETURN a OPERATOR(pg_catalog.<=) b;
END $$;
CREATE OPERATOR evil.<= (LEFTARG = int8, RIGHTARG = int8, FUNCTION = evil.le);
ALTER DATABASE postgres SET search_path = evil, pg_catalog;
});
# the worker starts again with the database's settings
$node->restart;
# the worker reads the outbox (the event stays there: no NATS)
ok($node->poll_query_until('postgres',
    q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'state_hub_events worker'}),
    'the worker runs');
# more events: the worker reads the outbox again and counts them
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.w2')}) for 1 .. 3;
ok($node->poll_query_until('postgres',
    q{SELECT backlog_events >= 4 FROM state_hub_events.worker_status()}),
    'the worker read the outbox (it counted the four events)');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'dbowner'}), 'f',
    'the database owner\'s operator did not run as the worker');

$node->stop;
done_testing();
