--
-- backfill(): bad input is refused at the call, with its SQLSTATE; the
-- events are those emit() gives for the same rows (pending() shows them);
-- batches are ordered by the key and resumable; who may run it.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS state_hub_events;
DROP ROLE IF EXISTS she_bf_app;
DROP ROLE IF EXISTS she_bf_pub;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE SCHEMA bf;
CREATE TABLE bf.items (id int PRIMARY KEY, slug text, price numeric, tags text[],
                       meta jsonb, secret text, seen timestamptz);
CREATE TRIGGER item_added AFTER INSERT ON bf.items FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.item.added', 'id:item_id', 'slug', 'price', 'tags', 'meta');
CREATE TABLE bf.plain (a int PRIMARY KEY, b text);
CREATE TABLE bf.nokey (a int, b text);
CREATE VIEW bf.items_v AS SELECT id, slug FROM bf.items;
CREATE SEQUENCE bf.seq;

-- the same rows through emit() and through backfill_batch(): equal events
BEGIN;
INSERT INTO bf.items VALUES
    (2, 'b', 1.50, '{x,y}', '{"k": [1, {"n": null}]}', 's2', '2026-01-01'),
    (1, 'a', 10, NULL, NULL, 's1', NULL),
    (3, 'c"q', -0.0, '{}', '"str"', 's3', now());
CREATE TEMP TABLE by_emit AS SELECT subject, attributes FROM state_hub_events.pending();
COMMIT;
BEGIN;
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.added');
CREATE TEMP TABLE by_backfill AS SELECT subject, attributes FROM state_hub_events.pending();
COMMIT;
SELECT * FROM by_backfill;
-- emit() buffered in insert order (2, 1, 3), backfill in key order
SELECT count(*) AS same FROM by_emit NATURAL JOIN by_backfill;

-- batches and the key to resume after
BEGIN;
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.added', batch_size => 2);
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.added', batch_size => 2, "after" => '{2}');
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.added', batch_size => 2, "after" => '{3}');
SELECT attributes->>'item_id' FROM state_hub_events.pending();
ROLLBACK;

-- "where", the whole row, given columns, a view with a key
BEGIN;
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.added', 'price > 1 -- comment');
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.seen', 'items.id = 1', columns => '{}');
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.x', 'id = 2', columns => '{id,slug:name,slug}');
SELECT * FROM state_hub_events.backfill_batch('bf.items_v', 'org.t.item.v', columns => '{}', key => '{slug}');
SELECT subject, attributes FROM state_hub_events.pending();
ROLLBACK;

-- quoted names, a column named like its table, a partitioned table, a
-- composite key
CREATE TABLE bf."Odd Name" ("Key" int PRIMARY KEY, "a b" text, "Odd Name" int);
CREATE TRIGGER "odd one" AFTER INSERT ON bf."Odd Name" FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.odd', 'a b:ab', 'Odd Name');
INSERT INTO bf."Odd Name" VALUES (2, 'two', 20), (1, 'one', 10);
CREATE TABLE bf.parts (k int, j int, v text, PRIMARY KEY (k, j)) PARTITION BY RANGE (k);
CREATE TABLE bf.parts_1 PARTITION OF bf.parts FOR VALUES FROM (0) TO (10);
CREATE TABLE bf.parts_2 PARTITION OF bf.parts FOR VALUES FROM (10) TO (20);
CREATE TRIGGER part_added AFTER INSERT ON bf.parts FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.part');
INSERT INTO bf.parts VALUES (15, 1, 'c'), (5, 2, 'b'), (5, 1, 'a');
BEGIN;
SELECT * FROM state_hub_events.backfill_batch('bf."Odd Name"', 'org.t.odd', '"a b" <> ''x'' AND "Odd Name"."Odd Name" > 0');
SELECT * FROM state_hub_events.backfill_batch('bf.parts', 'org.t.part', batch_size => 2);
SELECT * FROM state_hub_events.backfill_batch('bf.parts', 'org.t.part', batch_size => 2, "after" => '{5,2}');
SELECT subject, attributes FROM state_hub_events.pending();
ROLLBACK;

-- "after" has one value per key column, none NULL: a shorter, longer or
-- NULL-holding key would compare as NULL and skip rows without a word
CREATE FUNCTION bf.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT bf.try($q$SELECT state_hub_events.backfill_batch('bf.parts', 'org.t.part', "after" => '{5}')$q$);
SELECT bf.try($q$SELECT state_hub_events.backfill_batch('bf.parts', 'org.t.part', "after" => '{5,1,7}')$q$);
SELECT bf.try($q$SELECT state_hub_events.backfill_batch('bf.parts', 'org.t.part', "after" => '{}')$q$);
SELECT bf.try($q$SELECT state_hub_events.backfill_batch('bf.parts', 'org.t.part', "after" => '{5,NULL}')$q$);
SELECT bf.try($q$SELECT state_hub_events.backfill_batch('bf.parts', 'org.t.part', "after" => '{{5,1}}')$q$);
SELECT bf.try($q$SELECT state_hub_events.backfill_batch('bf.items', 'org.t.item.added', "after" => '{1,2}')$q$);
SELECT bf.try($q$SELECT state_hub_events.backfill_batch('bf.items', 'org.t.item.added', "where" => 'id > 0', "after" => '{1,2}')$q$);
CALL state_hub_events.backfill('bf.parts', 'org.t.part', "after" => '{5}');
-- any lower bound: the values count in order
BEGIN;
SELECT * FROM state_hub_events.backfill_batch('bf.parts', 'org.t.part', "after" => '[2:3]={5,1}');
SELECT subject, attributes FROM state_hub_events.pending();
ROLLBACK;

-- the procedure: one transaction per batch, a NOTICE each, the last key
CALL state_hub_events.backfill('bf.items', 'org.t.item.added', batch_size => 2);
CALL state_hub_events.backfill('bf.items', 'org.t.item.added', batch_size => 2, "after" => '{2}');
CALL state_hub_events.backfill('bf.items', 'org.t.item.added', 'id > 5');

-- refused at the call
CALL state_hub_events.backfill('bf.nosuch', 'org.t.x');
CALL state_hub_events.backfill(NULL, 'org.t.x');
CALL state_hub_events.backfill('bf.seq', 'org.t.x');
CALL state_hub_events.backfill('bf.items', NULL);
CALL state_hub_events.backfill('bf.items', 'org.t.*');
CALL state_hub_events.backfill('bf.items', 'elsewhere.x');
CALL state_hub_events.backfill('bf.items', 'org.t.x', batch_size => 0);
CALL state_hub_events.backfill('bf.items', 'org.t.x', batch_size => 100000000);
CALL state_hub_events.backfill('bf.items', 'org.t.x', batch_size => NULL);
CALL state_hub_events.backfill('bf.plain', 'org.t.x');
CALL state_hub_events.backfill('bf.plain', 'org.t.x', trigger => 'item_added');
CALL state_hub_events.backfill('bf.items', 'org.t.x', trigger => 'no_such');
CALL state_hub_events.backfill('bf.items', 'org.t.x', columns => '{nope}');
CALL state_hub_events.backfill('bf.items', 'org.t.x', columns => '{id:}');
CALL state_hub_events.backfill('bf.items', 'org.t.x', columns => '{id}', trigger => 'item_added');
CALL state_hub_events.backfill('bf.nokey', 'org.t.x', columns => '{}');
CALL state_hub_events.backfill('bf.nokey', 'org.t.x', columns => '{}', key => '{nope}');
CALL state_hub_events.backfill('bf.nokey', 'org.t.x', columns => '{}', key => '{}');
CALL state_hub_events.backfill('bf.items_v', 'org.t.x', columns => '{}');
-- a key column whose type cannot be sorted (no default btree operator class)
CREATE TABLE bf.pts (p point, a int[], q point[]);
CALL state_hub_events.backfill('bf.pts', 'org.t.x', columns => '{}', key => '{p}');
CALL state_hub_events.backfill('bf.pts', 'org.t.x', columns => '{}', key => '{q}');
-- (an array of a sortable type sorts, with pg_catalog's anyarray > anyarray)
INSERT INTO bf.pts (a) VALUES ('{1,2}'), ('{1}'), ('{0,5}');
BEGIN;
SELECT * FROM state_hub_events.backfill_batch('bf.pts', 'org.t.x', columns => '{a}', key => '{a}',
                                              batch_size => 1, "after" => '{"{1}"}');
SELECT * FROM state_hub_events.backfill_batch('bf.pts', 'org.t.x', columns => '{a}', key => '{a}',
                                              batch_size => 5, "after" => '{"{0,5}"}');
ROLLBACK;
DROP TABLE bf.pts;
-- the key's operators: those of its type's default btree operator class
SELECT s, state_hub_events._backfill_key_operator('int4', s) FROM generate_series(1, 5) s;
SELECT state_hub_events._backfill_key_operator('int4[]', 5), state_hub_events._backfill_key_operator('varchar', 5),
       state_hub_events._backfill_key_operator('point', 5);
SELECT state_hub_events._backfill_key_operator('int4', 6);
SELECT state_hub_events._backfill_key_operator(0, 5);
-- the "where" text: one boolean expression over the table, nothing more
CALL state_hub_events.backfill('bf.items', 'org.t.x', '');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'id');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'nope = 1');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'id = 1;');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'true; DROP TABLE bf.items');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'true) OR (true');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'true ORDER BY 1');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'true UNION SELECT 1');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'true LIMIT 1');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'true FOR UPDATE');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'id = (');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'count(*) > 0');
CALL state_hub_events.backfill('bf.items', 'org.t.x', '/* open');
-- a NULL key value
INSERT INTO bf.nokey VALUES (1, 'x'), (NULL, 'y');
CALL state_hub_events.backfill('bf.nokey', 'org.t.x', columns => '{}', key => '{a}');
-- it commits between batches: not inside a transaction block
BEGIN;
CALL state_hub_events.backfill('bf.items', 'org.t.item.added');
ROLLBACK;
-- the error codes
\set VERBOSITY sqlstate
CALL state_hub_events.backfill('bf.items', NULL);
CALL state_hub_events.backfill('bf.items', 'org.t.*');
CALL state_hub_events.backfill('bf.items', 'org.t.x', batch_size => 0);
CALL state_hub_events.backfill('bf.plain', 'org.t.x');
CALL state_hub_events.backfill('bf.items', 'org.t.x', columns => '{nope}');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'id');
CALL state_hub_events.backfill('bf.items', 'org.t.x', 'true) OR (true');
CALL state_hub_events.backfill('bf.seq', 'org.t.x');
BEGIN;
CALL state_hub_events.backfill('bf.items', 'org.t.item.added');
ROLLBACK;
\set VERBOSITY default

-- several emit() triggers: the one with the backfill's subject; else they
-- must agree on their columns
CREATE TRIGGER item_changed AFTER UPDATE ON bf.items FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.item.changed', 'id:item_id');
BEGIN;
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.changed', 'id = 1');
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.added', 'id = 1');
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.again', 'id = 1', trigger => 'item_changed');
SELECT subject, attributes FROM state_hub_events.pending();
ROLLBACK;
CALL state_hub_events.backfill('bf.items', 'org.t.item.again');

-- who may run it: not PUBLIC; a publishing role needs SELECT on the table.
-- The internal functions check EXECUTE on publish() and run as the caller.
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,
       p.prosecdef, p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'state_hub_events'::regnamespace
   AND p.proname IN ('backfill', 'backfill_batch', '_backfill_batch', '_backfill_query', '_backfill_check',
                     '_backfill_no_xact_block', '_trigger_args')
 ORDER BY 1;
-- _trigger_args() refuses what pg_trigger never holds, with 22023
SELECT bf.try($q$SELECT state_hub_events._trigger_args('\x6100', -1::int2)$q$);
SELECT bf.try($q$SELECT state_hub_events._trigger_args('\x6100', 2::int2)$q$);
SELECT bf.try($q$SELECT state_hub_events._trigger_args('\x61', 1::int2)$q$);
-- ... and bytes that are not text in the database's encoding (22021)
SELECT CASE WHEN getdatabaseencoding() = 'UTF8'
            THEN split_part(bf.try($q$SELECT state_hub_events._trigger_args('\xff00', 1::int2)$q$), ':', 1)
            ELSE '22021' END AS invalid_bytes;
SELECT state_hub_events._trigger_args('\x610062630000', 3::int2);
SELECT state_hub_events._trigger_args('\x', 0::int2);
CREATE ROLE she_bf_app;
CREATE ROLE she_bf_pub;
GRANT USAGE ON SCHEMA state_hub_events, bf TO she_bf_app, she_bf_pub;
GRANT EXECUTE ON FUNCTION state_hub_events.publish(text, jsonb) TO she_bf_pub;
GRANT EXECUTE ON PROCEDURE state_hub_events.backfill(regclass, text, text, integer, text[], text[], name, text[]) TO she_bf_pub;
GRANT SELECT ON bf.items TO she_bf_app;
SET ROLE she_bf_app;
CALL state_hub_events.backfill('bf.items', 'org.t.item.added');
RESET ROLE;
SET ROLE she_bf_pub;
CALL state_hub_events.backfill('bf.items', 'org.t.item.added');
RESET ROLE;
GRANT SELECT ON bf.items TO she_bf_pub;
REVOKE EXECUTE ON FUNCTION state_hub_events.publish(text, jsonb) FROM she_bf_pub;
SET ROLE she_bf_pub;
CALL state_hub_events.backfill('bf.items', 'org.t.item.added');
RESET ROLE;
GRANT EXECUTE ON FUNCTION state_hub_events.publish(text, jsonb) TO she_bf_pub;
SET ROLE she_bf_pub;
CALL state_hub_events.backfill('bf.items', 'org.t.item.added', 'id < 3');
-- granting backfill() is enough; backfill_batch() is granted on its own
SELECT * FROM state_hub_events.backfill_batch('bf.items', 'org.t.item.added');
-- the "where" text runs with the caller's rights, never more
CALL state_hub_events.backfill('bf.items', 'org.t.item.added', 'id < (SELECT count(*) FROM bf.plain)');
RESET ROLE;

DROP SCHEMA bf CASCADE;
DROP OWNED BY she_bf_app, she_bf_pub;
DROP ROLE she_bf_app;
DROP ROLE she_bf_pub;
