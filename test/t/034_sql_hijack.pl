
# 034_sql_hijack.pl
#    The extension's SQL against roles that are not its users (review 4,
#    findings 1 and 2):
#    1. A role without USAGE on schema state_hub_events creates triggers
#       that have nothing to do with emit() (the ddl_command_end event
#       trigger used to name the schema and failed for it).
#    2. backfill() run by a superuser in the default search_path
#       ("$user", public) does not run a quote_literal(text[]) or an
#       operator that a role with CREATE on public planted there; the
#       backfill publishes every row.
#    3. Key types with their own ordering (citext, in public): the batches
#       follow the type's ORDER BY, for a key of one citext column and of
#       a citext and an int column (compared column by column).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('sql_hijack', $nats, preload => 1);

# --- 1. CREATE TRIGGER by a role without USAGE on the extension's schema
$node->safe_psql('postgres', q{
    CREATE ROLE migrator LOGIN;
    CREATE SCHEMA app AUTHORIZATION migrator;
});
my ($ret, $out, $err) = $node->psql('postgres', q{
    SET search_path = app;
    CREATE TABLE t (id int);
    CREATE FUNCTION tf() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
    CREATE TRIGGER unrelated AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION tf();
    INSERT INTO t VALUES (1);
}, extra_params => [ '-U', 'migrator', '-v', 'ON_ERROR_STOP=1' ]);
is($ret, 0, 'a role without USAGE on state_hub_events can create a trigger that has nothing to do with it')
  or diag($err);
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgname = 'unrelated'}),
    '1', 'the trigger exists');
($ret, $out, $err) = $node->psql('postgres', q{DROP SCHEMA app CASCADE},
    extra_params => [ '-U', 'migrator', '-v', 'ON_ERROR_STOP=1' ]);
is($ret, 0, 'and drops its schema (the drop guard runs for it too)') or diag($err);

# --- 2. search_path hijack of backfill() by a role with CREATE on public
$node->safe_psql('postgres', q{
    CREATE ROLE mallory LOGIN;
    GRANT CREATE ON SCHEMA public TO mallory;
    CREATE TABLE public.items (id int PRIMARY KEY, name text);
    INSERT INTO public.items VALUES (1, 'a'), (2, 'b'), (3, 'c');
    CREATE TRIGGER it AFTER INSERT ON public.items FOR EACH ROW
        EXECUTE FUNCTION state_hub_events.emit('org.hijack.items', 'id', 'name');
});
$node->safe_psql('postgres', q{
    CREATE FUNCTION public.pwn() RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            EXECUTE 'ALTER ROLE mallory SUPERUSER';
        END IF;
        RETURN true;
    END $$;
    CREATE FUNCTION public.quote_literal(text[]) RETURNS text LANGUAGE sql
        AS $$ SELECT 'x' WHERE public.pwn() $$;
}, extra_params => [ '-U', 'mallory' ]);
($ret, $out, $err) = $node->psql('postgres',
    q{CALL state_hub_events.backfill('public.items', 'org.hijack.items', batch_size => 2)});
is($ret, 0, 'backfill() runs past the planted quote_literal') or diag($err);
like($err, qr/backfill of items done \(3 events in 2 batches\)/, 'all 3 rows in 2 batches');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
    'f', 'backfill() run by a superuser does not run a function mallory planted in public');
# an operator planted in public: the batch query's -> is pg_catalog's
$node->safe_psql('postgres', q{
    CREATE FUNCTION public.arrow(jsonb, jsonb) RETURNS jsonb LANGUAGE sql
        AS $$ SELECT $1 WHERE public.pwn() $$;
    CREATE OPERATOR public.-> (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = public.arrow);
}, extra_params => [ '-U', 'mallory' ]);
($ret, $out, $err) = $node->psql('postgres',
    q{CALL state_hub_events.backfill('public.items', 'org.hijack.items', batch_size => 2, "after" => '{1}')});
is($ret, 0, 'backfill() runs past the planted ->') or diag($err);
like($err, qr/backfill of items done \(2 events in 1 batches\)/, 'the 2 rows after 1 in 1 batch');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
    'f', 'mallory is still no superuser');
is($nats->wait_for_count(5, subject => 'org.hijack.items'), 5, 'the 5 events arrived');
my @m = $nats->messages(undef, undef, subject => 'org.hijack.items');
is_deeply([ map { $_->{body}{attributes} } @m ],
    [ map { { id => $_, name => (qw(a b c))[ $_ - 1 ] } } 1, 2, 3, 2, 3 ],
    'with the attributes emit() gives, in key order');

# --- 3. a key type with its own ordering, in another schema than pg_catalog
$node->safe_psql('postgres', q{
    CREATE EXTENSION citext SCHEMA public;
    CREATE TABLE public.names (name citext PRIMARY KEY);
    INSERT INTO public.names VALUES ('b'), ('A'), ('C'), ('d');
    CREATE TABLE public.pairs (name citext, n int, PRIMARY KEY (name, n));
    INSERT INTO public.pairs VALUES ('a', 2), ('B', 1), ('A', 1), ('b', 3);
});
# one batch at a time: the keys each batch ends with
sub batches
{
    my ($table, $key) = @_;
    my @keys;
    my $after = 'NULL';
    for (1 .. 10)    # bounded: at most 10 batches
    {
        my $r = $node->safe_psql('postgres', qq{
            SELECT events || '|' || coalesce(last_key::text, '')
              FROM state_hub_events.backfill_batch('$table', 'org.hijack.keys', columns => '{}',
                                                   batch_size => 1, "after" => $after, key => '$key')});
        my ($n, $last) = split /\|/, $r, 2;
        last if $n == 0;
        push @keys, $last;
        $after = $node->safe_psql('postgres', qq{SELECT quote_literal('$last')});
    }
    return @keys;
}
is_deeply([ batches('public.names', '{name}') ], [ '{A}', '{b}', '{C}', '{d}' ],
    'a citext key: batches in citext order (case-insensitive), none skipped');
is_deeply([ batches('public.pairs', '{name,n}') ], [ '{A,1}', '{a,2}', '{B,1}', '{b,3}' ],
    'a (citext, int) key: batches in key order, none skipped');
my $q = $node->safe_psql('postgres', q{
    SELECT state_hub_events._backfill_query('public.pairs', 'org.hijack.keys', NULL, 1, '{}', NULL,
                                            '{name,n}', false, '{a,1}')});
like($q, qr/OPERATOR\(public\.>\)/, 'citext is compared with its own operator, schema-qualified');
like($q, qr/OPERATOR\(pg_catalog\.>\)/, 'int with pg_catalog\'s');
my $bare = $q;
$bare =~ s/OPERATOR\([^)]*\)//g;
$bare =~ s/'(?:[^']|'')*'//g;
unlike($bare, qr/[<>=+|!~]/, 'no operator in the batch query is unqualified') or diag($q);

# the key condition is an index condition (a row comparison when every
# column's ">" has the same name)
for my $t ([ 'public.items', '{id}', '{1}' ], [ 'public.names', '{name}', '{A}' ],
    [ 'public.pairs', '{name,n}', '{A,1}' ])
{
    my ($table, $key, $after) = @$t;
    my $bq = $node->safe_psql('postgres', qq{
        SELECT state_hub_events._backfill_query('$table', 'org.hijack.keys', NULL, 1, '{}', NULL,
                                                '$key', false, '$after')});
    my $plan = $node->safe_psql('postgres', qq{
        SET enable_seqscan = off;
        PREPARE b(text[], int) AS $bq;
        EXPLAIN (COSTS OFF) EXECUTE b('$after', 1);});
    like($plan, qr/Index Cond:/, "$table: the batch's key condition uses the primary key's index")
      or diag($plan);
}

done_testing();
