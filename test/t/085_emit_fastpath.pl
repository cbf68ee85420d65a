# 085_emit_fastpath.pl
#    emit() writes the attributes of rows whose columns all have an exactly
#    known to_jsonb rendering straight from the tuple (src/emit_json.c);
#    the envelope must hold byte for byte what to_jsonb(row)::text (or, for
#    column specs, jsonb_build_object(...)::text) prints.  Every type of
#    the fast path with its edge values (min/max integers, empty strings,
#    quotes, backslashes, every control character, non-ASCII, NaN and the
#    infinities, BC dates, nested jsonb), NULLs, keys that jsonb reorders
#    by length, a dropped column, domains; column specs that rename,
#    reorder and repeat an attribute (the last wins); a table whose columns
#    change between statements of one transaction (the plan follows; a
#    float8 column sends its rows back to to_jsonb).  In a UTF8 and in a
#    LATIN1 database (the envelope is converted to UTF-8 at the call and
#    back for the outbox).
#
#    The envelopes are read from the outbox as the commit inserts them (an
#    AFTER INSERT trigger copies the attributes' text), and compared, as
#    text, with what a trigger firing right after emit() recorded from
#    to_jsonb for the same row.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use SheTest;

my $setup = <<'SQL';
-- capture every envelope the commit writes into the outbox
CREATE TABLE captured (seq bigint, attrs text);
CREATE FUNCTION capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO captured VALUES (NEW.seq,
        substr(NEW.envelope, strpos(NEW.envelope, '"attributes":') + 13,
               length(NEW.envelope) - strpos(NEW.envelope, '"attributes":') - 13));
    RETURN NULL;
END $$;
CREATE TRIGGER capture AFTER INSERT ON state_hub_events.outbox FOR EACH ROW EXECUTE FUNCTION capture();
-- what to_jsonb says, recorded by a trigger that fires right after emit()
CREATE TABLE expected (n bigserial, attrs text);
CREATE FUNCTION expect_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record; t text;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF TG_NARGS = 0 THEN
        INSERT INTO expected (attrs) VALUES (to_jsonb(r)::text);
    ELSE
        EXECUTE 'SELECT (' || TG_ARGV[0] || ')::text FROM (SELECT $1.*) AS r' INTO STRICT t USING r;
        INSERT INTO expected (attrs) VALUES (t);
    END IF;
    RETURN NULL;
END $$;
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE DOMAIN label AS text;
CREATE TABLE fast (
    id bigint, i2 int2, i4 int4, i8 int8, b bool, t text, vc varchar(20), bp char(6),
    u uuid, nm name, num numeric, d date, ts timestamp, tstz timestamptz, j jsonb,
    dropped_later text, dom posint, dtext label,
    "a_much_longer_column_name_that_sorts_last" text, "Z" int, "x""q\y" text);
ALTER TABLE fast DROP COLUMN dropped_later;
CREATE TRIGGER a_emit AFTER INSERT OR UPDATE OR DELETE ON fast FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.fast.row');
CREATE TRIGGER b_expect AFTER INSERT OR UPDATE OR DELETE ON fast FOR EACH ROW
    EXECUTE FUNCTION expect_row();
SET state_hub_events.delivery = 'durable';
SET timezone = 'America/New_York';
BEGIN;
INSERT INTO fast VALUES
 (1, -32768, -2147483648, -9223372036854775808, true, '', '', '', '00000000-0000-0000-0000-000000000000', '', 0, '2000-01-01', '2000-01-01 00:00', '2000-01-01 00:00+00', '{}', 1, '', '', 0, ''),
 (2, 32767, 2147483647, 9223372036854775807, false, 'quote " backslash \ slash /', 'tab	nl
cr' || chr(13), 'ab', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'a"b', -1.500, '0044-03-15 BC', 'infinity', '-infinity', '[1, 1.0e3, -0.0, "s", null, true, {"b": {"aa": [], "a": {}}}]', 2147483647, E'\\x', E'\u00e9\u4e2d\U0001F600', -1, E'\u007f'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, 0, true, E'\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f end', 'x', 'abcdef', gen_random_uuid(), 'pg_catalog', 'NaN', 'infinity', '1999-12-31 23:59:59.999999', '2024-02-29 12:34:56.789+05:30', '"just a string \u00e9"', 3, 'dom', 'long', 7, 'k'),
 (5, 1, 1, 1, false, repeat('x', 5000), 'v', NULL, NULL, 'n', 'Infinity', NULL, NULL, now(), '12.50', 4, NULL, NULL, NULL, NULL),
 (6, 2, 2, 2, true, 't', 'v', 'c', NULL, 'n', '-Infinity', NULL, NULL, NULL, 'null', 5, NULL, NULL, NULL, NULL),
 (7, 3, 3, 3, true, 't', 'v', 'c', NULL, 'n', 123456789012345678901234567890.000000000000000000001, NULL, NULL, NULL, '{"k": "v\n\"q\"", "": 0, "longer": [[]], "a": false}', 6, NULL, NULL, NULL, NULL),
 (8, 4, 4, 4, true, 't', 'v', 'c', NULL, 'n', 1e-20, NULL, NULL, NULL, 'true', 7, NULL, NULL, NULL, NULL);
UPDATE fast SET t = 'updated' WHERE id = 3;
DELETE FROM fast WHERE id = 4;
COMMIT;
-- column specs: renamed, reordered by attribute name, duplicates (the last wins); a dropped column the specs do not name
CREATE TABLE spec (id int, n bigint, s text, gone text, j jsonb);
CREATE TRIGGER a_emit AFTER INSERT ON spec FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.fast.spec', 'id', 'n:a_long_name', 's:z', 'n:z', 'j:"q"', 'id:ID');
CREATE TRIGGER b_expect AFTER INSERT ON spec FOR EACH ROW
    EXECUTE FUNCTION expect_row($$jsonb_build_object('id', r.id, 'a_long_name', r.n, 'z', r.s, 'z', r.n, '"q"', r.j, 'ID', r.id)$$);
ALTER TABLE spec DROP COLUMN gone;
BEGIN;
INSERT INTO spec VALUES (1, 9223372036854775807, 'x\y', '[{"b": 1, "a": 2}]'), (2, NULL, NULL, NULL);
COMMIT;
-- a table whose columns change between statements: the plan follows
CREATE TABLE shape (id int, v text);
CREATE TRIGGER a_emit AFTER INSERT OR UPDATE OR DELETE ON shape FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.fast.shape');
CREATE TRIGGER b_expect AFTER INSERT OR UPDATE OR DELETE ON shape FOR EACH ROW EXECUTE FUNCTION expect_row();
BEGIN;
INSERT INTO shape VALUES (1, 'one');
ALTER TABLE shape ADD COLUMN extra_column int DEFAULT 5;
INSERT INTO shape VALUES (2, 'two');
UPDATE shape SET extra_column = 6 WHERE id = 2;
-- row 1 was stored before extra_column existed: its value is the default kept aside
DELETE FROM shape WHERE id = 1;
ALTER TABLE shape ALTER COLUMN v TYPE int USING length(v);
INSERT INTO shape VALUES (3, 333);
ALTER TABLE shape ADD COLUMN f float8 DEFAULT 1e20;
INSERT INTO shape VALUES (4, 4);
ALTER TABLE shape DROP COLUMN f;
ALTER TABLE shape RENAME COLUMN v TO renamed_v;
INSERT INTO shape VALUES (5, 5);
COMMIT;
SQL

my $cmp = q{
  FROM (SELECT row_number() OVER (ORDER BY seq) AS n, attrs FROM captured) c
  FULL JOIN (SELECT row_number() OVER (ORDER BY n) AS n, attrs FROM expected) e USING (n)
};

for my $enc ('UTF8', 'LATIN1')
{
    # no NATS: the worker cannot publish, the outbox rows are only read here
    my $node = she_node("emit_fastpath_$enc", undef, conf => q{
state_hub_events.database = 'fp'
state_hub_events.nats_url = 'nats://127.0.0.1:1'
});
    $node->safe_psql('postgres',
        "CREATE DATABASE fp ENCODING '$enc' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
    my $sql = $setup;
    # LATIN1 holds é but neither 中 nor the emoji
    $sql =~ s/\\u4e2d\\U0001F600/\\u00fc\\u00ff/ if $enc eq 'LATIN1';
    $node->safe_psql('fp', "CREATE EXTENSION state_hub_events;\n$sql");

    is($node->safe_psql('fp', "SELECT count(*) $cmp"), '19',
        "$enc: every row written gave one event and one expected text");
    is($node->safe_psql('fp',
            "SELECT string_agg(format('got:  %s\nwant: %s', c.attrs, e.attrs), E'\\n') $cmp"
              . ' WHERE c.attrs IS DISTINCT FROM e.attrs'),
        '', "$enc: the attributes are byte for byte what to_jsonb / jsonb_build_object print");
    like($node->safe_psql('fp', 'SELECT attrs FROM captured ORDER BY seq LIMIT 1'),
        qr/^\{"Z": 0, "b": true, "d": "2000-01-01", "j": \{\}, "t": "", /,
        "$enc: keys come shortest first, then bytewise");
    $node->stop;
}

done_testing();
