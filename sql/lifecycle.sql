--
-- Extension lifecycle: ALTER EXTENSION UPDATE from 1.0, hop by hop, gives
-- what a fresh install gives (members, labels, privileges, initial
-- privileges, signatures, comments, table columns and defaults); DROP
-- EXTENSION is refused while the outbox holds events.
--
-- (in a database of its own: the other tests' triggers depend on emit())
CREATE DATABASE she_lifecycle;
\c she_lifecycle
\set SHOW_CONTEXT never

-- an ACL as "grantee:privilege,...", the owner called "owner"; the owner's
-- full default privileges are one entry, "owner:ALL" (what that set holds
-- varies: PostgreSQL 17 adds MAINTAIN on tables), a partial set is listed
CREATE FUNCTION pg_temp.acl(a aclitem[], owner oid, kind "char") RETURNS text
LANGUAGE sql STABLE AS $$
    WITH x AS (SELECT * FROM aclexplode(coalesce(a, acldefault(kind, owner)))),
         d AS (SELECT privilege_type, is_grantable
                 FROM aclexplode(acldefault(kind, owner)) WHERE grantee = owner),
         f AS (SELECT NOT EXISTS (SELECT * FROM d EXCEPT
                                  SELECT privilege_type, is_grantable
                                    FROM x WHERE grantee = owner) AS all_default)
    SELECT string_agg(g, ',' ORDER BY g)
      FROM (SELECT 'owner:ALL' AS g FROM f WHERE all_default
            UNION ALL
            SELECT CASE WHEN x.grantee = 0 THEN 'public'
                        WHEN x.grantee = owner THEN 'owner'
                        ELSE x.grantee::regrole::text END
                   || ':' || x.privilege_type
              FROM x, f
             WHERE NOT (all_default AND x.grantee = owner
                        AND (x.privilege_type, x.is_grantable) IN (SELECT * FROM d))) s
$$;

-- the member objects of the installed version, described (PostgreSQL 17
-- also records a table's row type and its array type as members: they are
-- left out, so that every version lists the same)
CREATE TEMP VIEW members AS
SELECT pg_describe_object(classid, objid, objsubid) AS member
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'state_hub_events')
   AND deptype = 'e'
   AND NOT (classid = 'pg_type'::regclass
            AND objid IN (SELECT oid FROM pg_type WHERE typrelid <> 0
                          UNION ALL
                          SELECT typarray FROM pg_type WHERE typrelid <> 0));

-- everything a user relies on: each member with its labels and privileges,
-- the initial privileges pg_dump compares with, the schema's privileges
CREATE TEMP VIEW facts AS
SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
       || coalesce(' | ' || f.fact, '') AS fact
  FROM pg_depend d
  LEFT JOIN LATERAL (
        SELECT format('volatile=%s strict=%s parallel=%s cost=%s secdef=%s config=%s acl=%s'
                      ' args=(%s) result=%s comment=%s',
                      p.provolatile, p.proisstrict, p.proparallel, p.procost, p.prosecdef,
                      p.proconfig, pg_temp.acl(p.proacl, p.proowner, 'f'),
                      pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
                      left(md5(obj_description(p.oid, 'pg_proc')), 8)) AS fact
          FROM pg_proc p
         WHERE d.classid = 'pg_proc'::regclass AND p.oid = d.objid
        UNION ALL
        SELECT format('acl=%s', pg_temp.acl(c.relacl, c.relowner,
                      CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char"))
               || coalesce(' columns=' || (
                  SELECT string_agg(format('%s %s%s%s', a.attname,
                                           format_type(a.atttypid, a.atttypmod),
                                           CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                                           coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')),
                                    ', ' ORDER BY a.attnum)
                    FROM pg_attribute a
                    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                     AND c.relkind = 'r'), '')
          FROM pg_class c
         WHERE d.classid = 'pg_class'::regclass AND c.oid = d.objid
        UNION ALL
        SELECT format('event=%s enabled=%s tags=%s function=%s',
                      e.evtevent, e.evtenabled, e.evttags, e.evtfoid::regprocedure)
          FROM pg_event_trigger e
         WHERE d.classid = 'pg_event_trigger'::regclass AND e.oid = d.objid
        UNION ALL
        SELECT format('init privs=%s', pg_temp.acl(i.initprivs, ext.extowner,
                      CASE WHEN i.classoid = 'pg_class'::regclass
                           THEN (SELECT CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END
                                   FROM pg_class c WHERE c.oid = i.objoid)
                           ELSE 'f' END::"char"))
          FROM pg_init_privs i, pg_extension ext
         WHERE ext.extname = 'state_hub_events'
           AND i.classoid = d.classid AND i.objoid = d.objid AND i.objsubid = d.objsubid
       ) f ON true
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'state_hub_events')
   AND d.deptype = 'e'
   AND NOT (d.classid = 'pg_type'::regclass
            AND d.objid IN (SELECT oid FROM pg_type WHERE typrelid <> 0
                            UNION ALL
                            SELECT typarray FROM pg_type WHERE typrelid <> 0))
UNION ALL
SELECT 'schema state_hub_events | acl=' || pg_temp.acl(n.nspacl, n.nspowner, 'n')
  FROM pg_namespace n WHERE n.nspname = 'state_hub_events';

CREATE EXTENSION state_hub_events;
SELECT extversion FROM pg_extension WHERE extname = 'state_hub_events';
CREATE TEMP TABLE fresh AS SELECT member FROM members;
CREATE TEMP TABLE fresh_facts AS SELECT fact FROM facts;
DROP EXTENSION state_hub_events;
DROP SCHEMA state_hub_events;

-- 1.0, then each hop by itself
CREATE EXTENSION state_hub_events VERSION '1.0';
-- an outbox row survives the updates
INSERT INTO state_hub_events.outbox (seq, id, subject, envelope)
VALUES (nextval('state_hub_events.outbox_seq'), gen_random_uuid(), 'org.t.kept', '{}');
ALTER EXTENSION state_hub_events UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'state_hub_events';
CREATE TEMP TABLE facts_11 AS SELECT fact FROM facts;
ALTER EXTENSION state_hub_events UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'state_hub_events';
CREATE TEMP TABLE facts_12 AS SELECT fact FROM facts;

-- what 1.1 -> 1.2 changed
(SELECT '1.1: ' || fact FROM facts_11 EXCEPT SELECT '1.1: ' || fact FROM facts_12)
UNION ALL
(SELECT '1.2: ' || fact FROM facts_12 EXCEPT SELECT '1.2: ' || fact FROM facts_11)
ORDER BY 1;

ALTER EXTENSION state_hub_events UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'state_hub_events';

-- what 1.2 -> 1.3 changed
(SELECT '1.2: ' || fact FROM facts_12 EXCEPT SELECT '1.2: ' || fact FROM facts)
UNION ALL
(SELECT '1.3: ' || fact FROM facts EXCEPT SELECT '1.3: ' || fact FROM facts_12)
ORDER BY 1;
-- 1.3: the outbox records each event's transaction; stats() counts atomic batches
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'state_hub_events.outbox'::regclass AND attnum > 0 AND NOT attisdropped
 ORDER BY attnum;
SELECT pg_get_function_arguments('state_hub_events.stats()'::regprocedure);
-- 1.3: pending() is declared RETURNS TABLE, as documented
SELECT pg_get_function_result('state_hub_events.pending()'::regprocedure);
SELECT txn_id, txn_key, txn_index, txn_count FROM state_hub_events.outbox;

-- updated and fresh have the same members, labels and privileges
(SELECT member FROM members EXCEPT SELECT member FROM fresh)
UNION ALL
(SELECT member FROM fresh EXCEPT SELECT member FROM members);
(SELECT 'updated only: ' || fact FROM facts EXCEPT SELECT 'updated only: ' || fact FROM fresh_facts)
UNION ALL
(SELECT 'fresh only: ' || fact FROM fresh_facts EXCEPT SELECT 'fresh only: ' || fact FROM facts);
SELECT count(*) AS members FROM members;
SELECT subject FROM state_hub_events.outbox;

-- the outbox holds an event: dropping it any way is refused
DROP EXTENSION state_hub_events;
DROP SCHEMA state_hub_events CASCADE;
-- also in a session that has not loaded the library
\c she_lifecycle
DROP EXTENSION state_hub_events;
SELECT count(*) FROM state_hub_events.outbox;

-- discarding on purpose, then dropping works
TRUNCATE state_hub_events.outbox;
DROP EXTENSION state_hub_events;
SELECT count(*) FROM pg_extension WHERE extname = 'state_hub_events';

\c contrib_regression
DROP DATABASE she_lifecycle;
