
# 088_backfill_owner_code.pl
#    backfill() and backfill_batch() run with their caller's rights, and
#    their batch query runs code that the owners of the table's column types
#    chose, which a plain SELECT of the table never runs: to_jsonb(row)
#    converts a value of a type a role created with that type's cast to
#    json (of every column, also those the emit() trigger does not map),
#    and the key is cast to text and back.  A role that owns a table (with
#    an emit() trigger the DBA put there) and may create a type, a function
#    and a cast made the superuser who backfilled the table run its function:
#    here, to make itself a superuser.  Such code of a role that is neither
#    a superuser nor one the caller may become is refused before anything
#    is read; the role itself may still backfill, and built-in types pass.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use SheTest;

# no nats_url: publishing is a no-op, backfill() still counts its events
my $node = she_node('backfill_owner_code', undef);

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
CREATE SCHEMA mal AUTHORIZATION mallory;
GRANT USAGE ON SCHEMA state_hub_events TO mallory;
GRANT EXECUTE ON FUNCTION state_hub_events.publish(text, jsonb) TO mallory;
GRANT EXECUTE ON FUNCTION state_hub_events.backfill_batch(regclass, text, text, integer, text[], text[], name, text[]) TO mallory;
SET ROLE mallory;
CREATE TYPE mal.mood AS ENUM ('ok');
CREATE TABLE mal.log (who name, superuser boolean);
-- runs with the rights of whoever converts a mood to json; promotes
-- mallory when that is a superuser
CREATE FUNCTION mal.mood_json(mal.mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.log SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    END IF;
    RETURN to_json($1::text);
END $$;
CREATE CAST (mal.mood AS json) WITH FUNCTION mal.mood_json(mal.mood);
CREATE TABLE mal.t (id int PRIMARY KEY, m mal.mood);
INSERT INTO mal.t VALUES (1, 'ok'), (2, 'ok');
-- an enum key: cast to text and back in the batch query
CREATE TYPE mal.k AS ENUM ('a', 'b');
CREATE FUNCTION mal.k_text(mal.k) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.log SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    RETURN $1::text;
END $$;
CREATE CAST (mal.k AS text) WITH FUNCTION mal.k_text(mal.k);
CREATE TABLE mal.keyed (k mal.k PRIMARY KEY, n int);
INSERT INTO mal.keyed VALUES ('a', 1);
RESET ROLE;
-- the DBA maps only "id": the cast still runs, to_jsonb converts the row
CREATE TRIGGER t_emit AFTER INSERT OR UPDATE ON mal.t FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.mal.t.changed', 'id');
CREATE TRIGGER keyed_emit AFTER INSERT OR UPDATE ON mal.keyed FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.mal.keyed.changed', 'n');
CREATE TABLE public.plain (id int PRIMARY KEY, a text[], j jsonb, r int4range, d date, c name);
INSERT INTO public.plain VALUES (1, '{x}', '{"k": 1}', '[1,2)', '2026-01-01', 'n');
CREATE TRIGGER plain_emit AFTER INSERT ON public.plain FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.plain.created');
});

# the superuser backfills mallory's table
my ($ret, $out, $err) = $node->psql('postgres', q{
\set VERBOSITY verbose
SELECT events FROM state_hub_events.backfill_batch('mal.t', 'org.mal.t.changed')});
isnt($ret, 0, "a superuser's backfill of a table whose column type has a cast to json of its owner is refused");
like($err, qr/ERROR:  42501: cannot backfill "mal\.t": column "m" would run code of role "mallory"/,
    'insufficient_privilege, naming the column and the role');
like($err, qr/mal\.mood_json\(mal\.mood\)/, 'the detail names the function');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
    'f', 'mallory is no superuser');
is($node->safe_psql('postgres', 'SELECT count(*) FROM mal.log'), '0',
    "mallory's function never ran");

# the procedure refuses too, before its first batch
($ret, $out, $err) = $node->psql('postgres',
    q{CALL state_hub_events.backfill('mal.t', 'org.mal.t.changed')});
like($err, qr/cannot backfill "mal\.t": column "m" would run code of role "mallory"/,
    'CALL backfill() is refused the same way');
is($node->safe_psql('postgres', 'SELECT count(*) FROM mal.log'), '0', 'and runs nothing');

# a key type of hers: its casts to and from text run in the batch query
($ret, $out, $err) = $node->psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('mal.keyed', 'org.mal.keyed.changed')});
like($err, qr/cannot backfill "mal\.keyed": column "k" would run code of role "mallory"/,
    'a key whose type that role owns is refused');
is($node->safe_psql('postgres', 'SELECT count(*) FROM mal.log'), '0', 'no cast ran');

# a role she is not: a publishing role of the DBA's
$node->safe_psql('postgres', q{
CREATE ROLE hub_publisher LOGIN;
GRANT USAGE ON SCHEMA state_hub_events, mal TO hub_publisher;
GRANT SELECT ON mal.t TO hub_publisher;
GRANT EXECUTE ON FUNCTION state_hub_events.publish(text, jsonb) TO hub_publisher;
GRANT EXECUTE ON FUNCTION state_hub_events.backfill_batch(regclass, text, text, integer, text[], text[], name, text[]) TO hub_publisher;
});
($ret, $out, $err) = $node->psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('mal.t', 'org.mal.t.changed')},
    extra_params => [ '-U', 'hub_publisher' ]);
like($err, qr/cannot backfill "mal\.t": column "m" would run code of role "mallory"/,
    'so is another non-superuser caller');

# the check opens only tables its caller may read (it is executable by
# every role with USAGE on the schema, like backfill()'s other helpers)
($ret, $out, $err) = $node->psql('postgres',
    q{SELECT state_hub_events._backfill_check_code('mal.keyed', '{}')},
    extra_params => [ '-U', 'hub_publisher' ]);
like($err, qr/cannot backfill "mal\.keyed": permission denied to read it/,
    'the check refuses a table its caller cannot read');

# mallory herself may: it is her own code, with her own rights
is($node->safe_psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('mal.t', 'org.mal.t.changed')},
    extra_params => [ '-U', 'mallory' ]), '2', 'the owner backfills her own table');
is($node->safe_psql('postgres', q{SELECT DISTINCT who || ':' || superuser FROM mal.log}),
    'mallory:false', 'her cast ran as herself only');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
    'f', 'and she is still no superuser');

# her row security policy and her view run her function as the reader
$node->safe_psql('postgres', q{
SET ROLE mallory;
CREATE FUNCTION mal.peek() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.log SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    RETURN true;
END $$;
CREATE TABLE mal.p (id int PRIMARY KEY, n int);
INSERT INTO mal.p VALUES (1, 1);
ALTER TABLE mal.p ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON mal.p USING (mal.peek());
CREATE VIEW mal.v AS SELECT id, m FROM mal.t WHERE mal.peek();
GRANT SELECT ON mal.p, mal.v TO hub_publisher;
GRANT INSERT ON mal.log TO PUBLIC;
RESET ROLE;
TRUNCATE mal.log;
});
($ret, $out, $err) = $node->psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('mal.p', 'org.mal.p.changed', columns => '{id}')},
    extra_params => [ '-U', 'hub_publisher' ]);
like($err, qr/cannot backfill "mal\.p": reading it would run code of role "mallory".*\n.*row security policies/,
    'a table whose row security policies apply to the caller is refused');
($ret, $out, $err) = $node->psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('mal.v', 'org.mal.v.changed', columns => '{id}', key => '{id}')},
    extra_params => [ '-U', 'hub_publisher' ]);
like($err, qr/cannot backfill "mal\.v": reading it would run code of role "mallory".*\n.*view's query/,
    'so is her view');
is($node->safe_psql('postgres', 'SELECT count(*) FROM mal.log'), '0', 'her function never ran');
is($node->safe_psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('mal.p', 'org.mal.p.changed', columns => '{id}')}),
    '1', 'a superuser bypasses row security: her table is backfilled');

# built-in types (arrays, jsonb, ranges, dates, names) pass
is($node->safe_psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('public.plain', 'org.plain.created')}),
    '1', 'a table of built-in types is backfilled');

# a cast of a superuser's type is trusted
$node->safe_psql('postgres', q{
CREATE TYPE public.tone AS ENUM ('calm');
CREATE FUNCTION public.tone_json(public.tone) RETURNS json LANGUAGE sql AS $$ SELECT to_json('t:' || $1::text) $$;
CREATE CAST (public.tone AS json) WITH FUNCTION public.tone_json(public.tone);
CREATE TABLE public.toned (id int PRIMARY KEY, t public.tone);
INSERT INTO public.toned VALUES (1, 'calm');
CREATE TRIGGER toned_emit AFTER INSERT ON public.toned FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.toned.created');
});
is($node->safe_psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('public.toned', 'org.toned.created')}),
    '1', "a superuser's cast runs");

# a key type of hers that runs only built-in code passes (an enum, a
# domain without constraints); a domain of hers with a CHECK is refused
$node->safe_psql('postgres', q{
SET ROLE mallory;
CREATE TYPE mal.e AS ENUM ('x', 'y');
CREATE DOMAIN mal.d AS bigint;
CREATE DOMAIN mal.dn AS bigint NOT NULL;
CREATE DOMAIN mal.dc AS bigint CHECK (mal.peek());
CREATE TABLE mal.ek (k mal.e PRIMARY KEY, n int);
CREATE TABLE mal.dk (k mal.d PRIMARY KEY, n int);
CREATE TABLE mal.dnk (k mal.dn PRIMARY KEY, n int);
CREATE TABLE mal.dck (k mal.dc PRIMARY KEY, n int);
INSERT INTO mal.ek VALUES ('x', 1);
INSERT INTO mal.dk VALUES (1, 1);
INSERT INTO mal.dnk VALUES (1, 1);
INSERT INTO mal.dck VALUES (1, 1);
RESET ROLE;
TRUNCATE mal.log;
CREATE TRIGGER ek_emit AFTER INSERT ON mal.ek FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.mal.ek.created', 'n');
CREATE TRIGGER dk_emit AFTER INSERT ON mal.dk FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.mal.dk.created', 'n');
CREATE TRIGGER dnk_emit AFTER INSERT ON mal.dnk FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.mal.dnk.created', 'n');
CREATE TRIGGER dck_emit AFTER INSERT ON mal.dck FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.mal.dck.created', 'n');
});
is($node->safe_psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('mal.ek', 'org.mal.ek.created')}),
    '1', 'an enum key of hers (built-in input and output) is backfilled');
is($node->safe_psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('mal.dk', 'org.mal.dk.created')}),
    '1', 'so is a key of her domain without constraints');
is($node->safe_psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('mal.dnk', 'org.mal.dnk.created')}),
    '1', 'and of her domain with only NOT NULL (it runs no code)');
($ret, $out, $err) = $node->psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('mal.dck', 'org.mal.dck.created')});
like($err, qr/cannot backfill "mal\.dck": column "k" would run code of role "mallory"/,
    'a key of her domain with a CHECK constraint is refused');
is($node->safe_psql('postgres', 'SELECT count(*) FROM mal.log'), '0', 'her CHECK never ran');

# a superuser's domain over her constrained domain, in an array key: every
# level's CHECK runs when the key is read back
$node->safe_psql('postgres', q{
CREATE DOMAIN public.outer_d AS mal.dc;
CREATE TABLE public.nested (k public.outer_d[] PRIMARY KEY, n int);
SET session_replication_role = replica;
INSERT INTO public.nested VALUES (ARRAY[1::bigint]::public.outer_d[], 1);
RESET session_replication_role;
TRUNCATE mal.log;
CREATE TRIGGER nested_emit AFTER INSERT ON public.nested FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.nested.created', 'n');
});
($ret, $out, $err) = $node->psql('postgres',
    q{SELECT events FROM state_hub_events.backfill_batch('public.nested', 'org.nested.created')});
like($err, qr/cannot backfill "public\.nested": column "k" would run code of role "mallory"/,
    "a key of a trusted domain over her constrained domain is refused");
is($node->safe_psql('postgres', 'SELECT count(*) FROM mal.log'), '0', 'and nothing of hers ran');

done_testing();
