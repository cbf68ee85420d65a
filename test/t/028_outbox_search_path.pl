# 028_outbox_search_path.pl
#    Durable mode writes the outbox at pre-commit with the outbox owner's
#    rights: an operator in a schema of the committing role's search_path
#    must never run there.  An application role that may only INSERT into a
#    table with an emit() trigger must not become superuser by placing its
#    own "+" before pg_catalog.  The insert's plan is cached per backend
#    and analysed again under the search_path of the commit that runs it
#    when that differs from the one it was planned under: a commit before
#    the role changes its search_path plans it, the commits after it must
#    still resolve only pg_catalog's operator (both inserts: one event's
#    row, and several events' arrays).  The same for every other
#    name in the insert (unnest, nextval, the casts).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use SheTest;

my $node = she_node('outbox_sp', undef, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
});

$node->safe_psql('postgres', q{
CREATE ROLE app LOGIN;
CREATE SCHEMA evil AUTHORIZATION app;
CREATE TABLE public.watched (id int PRIMARY KEY, v text);
CREATE TRIGGER w AFTER INSERT ON public.watched
    FOR EACH ROW EXECUTE FUNCTION state_hub_events.emit('org.t.w');
GRANT INSERT ON public.watched TO app;
});

my ($ret, $out, $err) = $node->psql('postgres', q{
SET ROLE app;
INSERT INTO public.watched VALUES (0, 'planned under the default search_path');
INSERT INTO public.watched VALUES (10, 'the insert of several'), (11, 'planned too');
CREATE FUNCTION evil.plus(a int4, b int4) RETURNS int4 LANGUAGE plpgsql AS $$
BEGIN
  IF current_user <> 'app' THEN
    EXECUTE 'ALTER ROLE app SUPERUSER';
  END IF;
  RETURN a OPERATOR(pg_catalog.+) b;
END $$;
CREATE OPERATOR evil.+ (LEFTARG = int4, RIGHTARG = int4, FUNCTION = evil.plus);
SET search_path = evil, pg_catalog, public;
INSERT INTO public.watched VALUES (1, 'x');
INSERT INTO public.watched VALUES (2, 'y');
INSERT INTO public.watched VALUES (12, 'z'), (13, 'w');
});
is($ret, 0, 'the inserts commit') or diag($err);

# every other name in the insert: unnest, nextval, the casts to uuid and
# int4 (as domains whose CHECK runs the role's function), planted in the
# role's schema, first on its path; a fresh session plans the insert under
# that path, the session above analyses its cached plan again
($ret, $out, $err) = $node->psql('postgres', q{
SET ROLE app;
CREATE FUNCTION evil.esc() RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  IF current_user <> 'app' THEN
    EXECUTE 'ALTER ROLE app SUPERUSER';
  END IF;
  RETURN true;
END $$;
CREATE FUNCTION evil.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
  PERFORM evil.esc();
  RETURN QUERY SELECT x FROM pg_catalog.unnest(a) x;
END $$;
CREATE FUNCTION evil.nextval(s regclass) RETURNS int8 LANGUAGE plpgsql AS $$
BEGIN
  PERFORM evil.esc();
  RETURN pg_catalog.nextval(s);
END $$;
CREATE DOMAIN evil.uuid AS text CHECK (evil.esc());
CREATE DOMAIN evil.int4 AS pg_catalog.int4 CHECK (evil.esc());
SET search_path = evil, pg_catalog, public;
INSERT INTO public.watched VALUES (3, 'a fresh plan under the role''s path');
BEGIN;
INSERT INTO public.watched VALUES (4, 'two events');
INSERT INTO public.watched VALUES (5, 'in one transaction');
COMMIT;
});
is($ret, 0, 'the inserts with unnest, nextval, uuid and int4 planted commit') or diag($err);
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app'}), 'f',
    'the role\'s own operator did not run as the outbox owner');
is($node->safe_psql('postgres', q{SELECT string_agg(txn_index || '/' || txn_count, ',' ORDER BY seq) FROM state_hub_events.outbox}),
    '1/1,1/2,2/2,1/1,1/1,1/2,2/2,1/1,1/2,2/2', 'the outbox rows record their transactions');

$node->stop;
done_testing();
