# 052_schema_owner.pl
#    CREATE EXTENSION puts the extension's objects into an existing schema
#    state_hub_events, whoever owns it.  A role that made that schema
#    beforehand (the database's owner) could add a function next to
#    backfill()'s helpers that its calls resolve to, and run code with the
#    rights of the superuser who runs backfill().  Such a schema is refused;
#    and the helpers' calls match the extension's functions exactly, so a
#    role given CREATE on the schema cannot slip an overload in either.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('schema_owner', $nats);

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
CREATE DATABASE hub OWNER mallory;
});

# a schema state_hub_events that mallory made beforehand is refused
$node->safe_psql('hub', 'CREATE SCHEMA state_hub_events', extra_params => [ '-U', 'mallory' ]);
my ($ret, $out, $err) = $node->psql('hub', 'CREATE EXTENSION state_hub_events');
isnt($ret, 0, 'CREATE EXTENSION into a schema mallory owns fails');
like($err, qr/cannot install state_hub_events into schema state_hub_events: its owner "mallory" is not a superuser/,
    'and says why');
is($node->safe_psql('hub', q{SELECT count(*) FROM pg_extension WHERE extname = 'state_hub_events'}), '0',
    'the extension is not installed');
# once a superuser owns it, it installs
$node->safe_psql('hub', 'ALTER SCHEMA state_hub_events OWNER TO CURRENT_USER; CREATE EXTENSION state_hub_events');
is($node->safe_psql('hub', q{SELECT extversion FROM pg_extension WHERE extname = 'state_hub_events'}), '1.3',
    'a schema a superuser owns is fine');

# a role given CREATE on the schema cannot hijack backfill()'s helpers
$node->safe_psql('postgres', q{
GRANT USAGE, CREATE ON SCHEMA state_hub_events TO mallory;
CREATE TABLE public.t (id int PRIMARY KEY);
INSERT INTO public.t VALUES (1), (2);
});
$node->safe_psql('postgres', q{
CREATE FUNCTION state_hub_events._backfill_key_operator(typ oid, strategy integer)
RETURNS regoperator LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    END IF;
    RETURN CASE strategy WHEN 3 THEN '=(int4,int4)'::regoperator
                         WHEN 4 THEN '>=(int4,int4)'::regoperator
                         ELSE '>(int4,int4)'::regoperator END;
END $$;
}, extra_params => [ '-U', 'mallory' ]);
is($node->safe_psql('postgres', q{
    SELECT events FROM state_hub_events.backfill_batch('public.t', 'org.t.backfill', columns => '{}')}),
    '2', 'the superuser backfills the table');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
    "mallory's overload did not run as the superuser");

$node->stop;
$nats->stop;
done_testing();
