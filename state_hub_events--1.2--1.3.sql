/* state_hub_events--1.2--1.3.sql */

\echo Use "ALTER EXTENSION state_hub_events UPDATE TO '1.3'" to load this file. \quit

-- ======================================================================
-- 1.3, security: the extension's schema belongs to a superuser
-- ======================================================================

-- CREATE EXTENSION puts the objects into an existing schema of that name,
-- whoever owns it.  Its owner could then drop them (and the extension
-- with them), or add functions next to them that calls by name resolve
-- to, and run code with the rights of whoever uses them: a superuser, the
-- durable worker.  So a schema made beforehand by another role is refused.
DO $$
DECLARE
    owner pg_catalog.name;
    super boolean;
BEGIN
    SELECT r.rolname, r.rolsuper INTO owner, super
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
     WHERE n.nspname = 'state_hub_events';
    IF NOT super THEN
        RAISE EXCEPTION 'cannot install state_hub_events into schema state_hub_events: its owner "%" is not a superuser', owner
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'That role could take over the extension''s objects. Drop the schema (CREATE EXTENSION creates it), or ALTER SCHEMA state_hub_events OWNER TO a superuser, and try again.';
    END IF;
END
$$;

-- ======================================================================
-- 1.3, transactions as units (headers and atomic batches)
-- ======================================================================

-- Durable mode: each outbox row records its transaction, so the worker can
-- send the Statehub-Txn-* headers: the full transaction id, the commit key
-- (one value of outbox_seq taken at pre-commit, before the events' own), the
-- event's 1-based index and the transaction's event count.  Rows written
-- before 1.3 have NULLs and go without those headers.
ALTER TABLE outbox
    ADD COLUMN txn_id bigint,
    ADD COLUMN txn_key bigint,
    ADD COLUMN txn_index integer,
    ADD COLUMN txn_count integer;

COMMENT ON COLUMN outbox.txn_id IS
'the transaction id (pg_current_xact_id()) that published the event; NULL for rows written before 1.3';
COMMENT ON COLUMN outbox.txn_key IS
'the commit key of the event''s transaction: a value of outbox_seq taken at its pre-commit';
COMMENT ON COLUMN outbox.txn_index IS
'the event''s 1-based position in its transaction';
COMMENT ON COLUMN outbox.txn_count IS
'the number of events the transaction committed';

-- stats() gains atomic_batches (atomic batches the server committed),
-- atomic_splits (transactions published as several atomic batches), and
-- order_lapses_held, order_lapses_room and order_lapses_wide (immediate mode:
-- batches whose commit order may have lapsed, by cause); it is created again
-- with the labels and privileges of 1.2.
DROP FUNCTION stats();

CREATE FUNCTION stats(
    OUT scope text,
    OUT buffered bigint,
    OUT published bigint,
    OUT duplicates bigint,
    OUT failed bigint,
    OUT unconfirmed bigint,
    OUT dropped bigint,
    OUT commits bigint,
    OUT commit_publish_p50_ms float8,
    OUT commit_publish_p99_ms float8,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT rejected bigint,
    OUT publisher_batches bigint,
    OUT publisher_events bigint,
    OUT atomic_batches bigint,
    OUT atomic_splits bigint,
    OUT order_lapses_held bigint,
    OUT order_lapses_room bigint,
    OUT order_lapses_wide bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'she_stats'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION stats() IS
'publishing counters: cluster-wide when the library is preloaded, else this backend''s (see scope)';

REVOKE EXECUTE ON FUNCTION stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stats() TO pg_monitor;

-- ======================================================================
-- end of 1.3, transactions as units
-- ======================================================================

-- ---------------------------------------------------------------------
-- 1.3, backfill: re-announce rows that exist already (issue 13), for a
-- consumer deployed after the data.  backfill() publishes one event per row
-- with the column mapping of the table's emit() trigger, in batches ordered
-- by the primary key, one transaction per batch.  It runs with its caller's
-- rights (SECURITY INVOKER: the "where" text is the caller's own SQL), and
-- is not executable by PUBLIC, like publish().
-- ---------------------------------------------------------------------

CREATE FUNCTION _backfill_check(subject text, "where" text, batch_size integer)
RETURNS void
AS 'MODULE_PATHNAME', 'she_backfill_check'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL SAFE;

COMMENT ON FUNCTION _backfill_check(text, text, integer) IS
'internal: backfill()''s checks of its subject, batch size and "where" text (one expression, nothing more)';

CREATE FUNCTION _backfill_no_xact_block()
RETURNS void
AS 'MODULE_PATHNAME', 'she_backfill_no_xact_block'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION _backfill_no_xact_block() IS
'internal: refuse backfill() inside a transaction block (it commits after each batch)';

CREATE FUNCTION _last_commit_unpublished()
RETURNS integer
AS 'MODULE_PATHNAME', 'she_last_commit_unpublished'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION _last_commit_unpublished() IS
'internal: events of this session''s last committed transaction reported lost or unconfirmed (backfill() stops on them)';

CREATE FUNCTION _trigger_args(tgargs bytea, tgnargs int2)
RETURNS text[]
AS 'MODULE_PATHNAME', 'she_trigger_args'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION _trigger_args(bytea, int2) IS
'internal: pg_trigger.tgargs as an array';

CREATE FUNCTION _backfill_key_operator(typ regtype, strategy integer)
RETURNS regoperator
AS 'MODULE_PATHNAME', 'she_backfill_key_operator'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION _backfill_key_operator(regtype, integer) IS
'internal: the operator of a btree strategy (3 "=", 4 ">=", 5 ">") in a type''s default btree operator class, which backfill() compares its key with; NULL if the type cannot be sorted';

CREATE FUNCTION _backfill_check_code(rel regclass, key text[])
RETURNS void
AS 'MODULE_PATHNAME', 'she_backfill_check_code'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION _backfill_check_code(regclass, text[]) IS
'internal: refuse a backfill whose batch query would run code of an untrusted role with the caller''s rights (a column type''s cast to json, the key type''s casts, input and constraints)';

-- The batch query of backfill() and backfill_batch(): $1 is the key to
-- start after (text[], NULL for the first batch), $2 the batch size.  Every
-- argument is checked here; the "where" text's shape by _backfill_check(),
-- and whether it is boolean over existing columns by the query returned with
-- check_where, which the caller runs (with its own search_path) before the
-- batch query.  Identifiers are quoted; the "where" text stands on lines of
-- its own inside parentheses.
CREATE FUNCTION _backfill_query(rel regclass, subject text, "where" text,
                                batch_size integer, columns text[],
                                "trigger" name, key text[],
                                check_where boolean DEFAULT false,
                                "after" text[] DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    specs text[];
    tg record;
    n integer := 0;
    alias text;
    attrs text[] := '{}';
    attrs_sql text;
    keycols text[] := '{}';
    keyleft text[] := '{}';
    keyright text[] := '{}';
    gtops text[] := '{}';
    eqops text[] := '{}';
    geop text;
    cmp text;
    typid oid;
    gt oid;
    eq oid;
    ge oid;
    ltyp text;
    rtyp text;
    spec text;
    col text;
    attr text;
    typ text;
    i integer;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'cannot backfill a NULL table' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT cl.relname, cl.relkind, ns.nspname INTO c
      FROM pg_class cl JOIN pg_namespace ns ON ns.oid = cl.relnamespace
     WHERE cl.oid = rel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cannot backfill table with OID %: it does not exist', rel::oid
            USING ERRCODE = 'undefined_table';
    END IF;
    IF c.relkind NOT IN ('r', 'p', 'v', 'm', 'f') THEN
        RAISE EXCEPTION 'cannot backfill "%": it is not a table or view', rel
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NOT has_table_privilege(rel, 'SELECT') THEN
        RAISE EXCEPTION 'cannot backfill "%": permission denied to read it', rel
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'backfill() runs with its caller''s rights and needs SELECT on the table.';
    END IF;
    IF NOT has_function_privilege('state_hub_events.publish(text, jsonb)', 'EXECUTE') THEN
        RAISE EXCEPTION 'cannot backfill "%": permission denied to publish', rel
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'backfill() publishes with its caller''s rights and needs EXECUTE on state_hub_events.publish().';
    END IF;
    PERFORM state_hub_events._backfill_check(subject, "where", batch_size);

    -- the column specs: given, or those of the table's emit() trigger
    IF columns IS NOT NULL THEN
        IF "trigger" IS NOT NULL THEN
            RAISE EXCEPTION 'cannot backfill "%" with both columns and trigger', rel
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'columns replaces the trigger''s column specs; pass one of them.';
        END IF;
        specs := columns;
    ELSE
        FOR tg IN
            SELECT t.tgname,
                   state_hub_events._trigger_args(t.tgargs, t.tgnargs) AS args
              FROM pg_trigger t
             WHERE t.tgrelid = rel
               AND t.tgfoid = 'state_hub_events.emit()'::regprocedure
               AND ("trigger" IS NULL OR t.tgname = "trigger")
             ORDER BY (t.tgnargs > 0 AND (state_hub_events._trigger_args(t.tgargs, t.tgnargs))[1] = subject) DESC,
                      t.tgname
        LOOP
            n := n + 1;
            IF n = 1 THEN
                specs := tg.args[2:];
                attr := tg.tgname;
                -- the trigger whose subject is the backfill's is chosen
                EXIT WHEN tg.args[1] = subject;
            ELSIF tg.args[2:] IS DISTINCT FROM specs THEN
                RAISE EXCEPTION 'cannot backfill "%": its emit() triggers "%" and "%" map columns differently', rel, attr, tg.tgname
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Name one with trigger => ''...'', or pass the subject of one of them.';
            END IF;
        END LOOP;
        IF n = 0 AND "trigger" IS NOT NULL THEN
            RAISE EXCEPTION 'cannot backfill "%": it has no emit() trigger "%"', rel, "trigger"
                USING ERRCODE = 'undefined_object';
        ELSIF n = 0 THEN
            RAISE EXCEPTION 'cannot backfill "%": it has no emit() trigger', rel
                USING ERRCODE = 'undefined_object',
                      HINT = 'Pass the column specs as columns => ''{column, column:attribute}'', or columns => ''{}'' for the whole row.';
        END IF;
    END IF;

    -- the row's alias is the relation's name, so "where" can qualify columns
    alias := quote_ident(c.relname);
    IF cardinality(specs) = 0 THEN
        attrs_sql := '_backfill_row.r';
    ELSE
        FOREACH spec IN ARRAY specs LOOP
            col := spec;
            attr := spec;
            IF strpos(spec, ':') > 0 THEN
                attr := substr(spec, strpos(spec, ':') + 1);
                col := substr(spec, 1, strpos(spec, ':') - 1);
            END IF;
            IF col IS NULL OR col = '' OR attr = '' THEN
                RAISE EXCEPTION 'cannot backfill "%": empty column or attribute name in column spec "%"', rel, coalesce(spec, 'NULL')
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A column spec is "column" or "column:attribute", as emit() takes them.';
            END IF;
            IF NOT EXISTS (SELECT FROM pg_attribute a
                            WHERE a.attrelid = rel AND a.attname = col
                              AND a.attnum > 0 AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'cannot backfill "%": column "%" does not exist', rel, col
                    USING ERRCODE = 'undefined_column';
            END IF;
            -- what emit() does: the column's value in to_jsonb(row)
            attrs := attrs || format('%L::pg_catalog.text, _backfill_row.r OPERATOR(pg_catalog.->) %L::pg_catalog.text',
                                     attr, col);
        END LOOP;
        -- jsonb_build_object takes at most 50 pairs: join chunks (a later
        -- attribute of the same name wins, as in emit())
        attrs_sql := '';
        FOR i IN 1 .. cardinality(attrs) BY 50 LOOP
            attrs_sql := attrs_sql || CASE WHEN i > 1 THEN ' OPERATOR(pg_catalog.||) ' ELSE '' END
                || 'pg_catalog.jsonb_build_object(' || array_to_string(attrs[i:i + 49], ', ') || ')';
        END LOOP;
    END IF;

    -- the key: given, or the primary key
    IF key IS NULL THEN
        SELECT array_agg(a.attname::text ORDER BY k.ord) INTO key
          FROM pg_index x
               CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
         WHERE x.indrelid = rel AND x.indisprimary;
        IF key IS NULL THEN
            RAISE EXCEPTION 'cannot backfill "%": it has no primary key', rel
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass the columns of a unique, non-null key as key => ''{column, ...}''; batches are ordered by it.';
        END IF;
    END IF;
    IF cardinality(key) = 0 THEN
        RAISE EXCEPTION 'cannot backfill "%" with an empty key', rel
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Each key column is compared with its type's own ">" (and "=", ">="): the
    -- members of the type's default btree operator class, the ordering
    -- ORDER BY uses.  The batch query runs under its caller's search_path
    -- (for the "where" text), so the operators are named with their schema,
    -- and both sides are cast to the operator's declared input types
    -- (schema-qualified): an operator or type that a role creates in a
    -- schema of the caller's path is never chosen.  The key columns'
    -- operators live in the schema of their type's operator class
    -- (pg_catalog for built-in types); whoever may create objects there is
    -- trusted with the type itself.
    FOREACH col IN ARRAY key LOOP
        SELECT a.atttypid INTO typid
          FROM pg_attribute a
         WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'cannot backfill "%": key column "%" does not exist', rel, coalesce(col, 'NULL')
                USING ERRCODE = 'undefined_column';
        END IF;
        gt := state_hub_events._backfill_key_operator(typid::pg_catalog.regtype, 5);
        eq := state_hub_events._backfill_key_operator(typid::pg_catalog.regtype, 3);
        ge := state_hub_events._backfill_key_operator(typid::pg_catalog.regtype, 4);
        IF gt IS NULL OR eq IS NULL OR ge IS NULL THEN
            RAISE EXCEPTION 'cannot backfill "%": key column "%" has type %, which has no default btree operator class', rel, col, typid::regtype
                USING ERRCODE = 'undefined_function',
                      HINT = 'Batches are ordered by the key: pass key => ''{column, ...}'' with columns that can be sorted.';
        END IF;
        -- (a polymorphic operator, e.g. anyarray > anyarray, is pg_catalog's:
        -- its operands are cast to the column's type)
        SELECT format('OPERATOR(%I.%s)', n.nspname, o.oprname),
               (SELECT format('%I.%I', tn.nspname, t.typname)
                  FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace
                 WHERE t.oid = CASE WHEN lt.typtype = 'p' THEN typid ELSE o.oprleft END),
               (SELECT format('%I.%I', tn.nspname, t.typname)
                  FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace
                 WHERE t.oid = CASE WHEN rt.typtype = 'p' THEN typid ELSE o.oprright END)
          INTO typ, ltyp, rtyp
          FROM pg_operator o
               JOIN pg_namespace n ON n.oid = o.oprnamespace
               JOIN pg_type lt ON lt.oid = o.oprleft
               JOIN pg_type rt ON rt.oid = o.oprright
         WHERE o.oid = gt;
        gtops := gtops || typ;
        SELECT format('OPERATOR(%I.%s)', n.nspname, o.oprname) INTO typ
          FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
         WHERE o.oid = eq;
        eqops := eqops || typ;
        IF geop IS NULL THEN
            SELECT format('OPERATOR(%I.%s)', n.nspname, o.oprname) INTO geop
              FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
             WHERE o.oid = ge;
        END IF;
        keycols := keycols || format('%s.%I', alias, col);
        keyleft := keyleft || format('%s.%I::%s', alias, col, ltyp);
        keyright := keyright || format('($1[%s])::%s', cardinality(keycols), rtyp);
    END LOOP;
    -- to_jsonb(row) and the key's casts run code the owners of the column
    -- types chose, with the caller's rights: only code of trusted roles
    PERFORM state_hub_events._backfill_check_code(rel, key);
    -- after the key "after": one row comparison when every column's ">" is
    -- the same operator name (an index on the key serves it); else column
    -- by column, the last one innermost, and the first column's ">=" for
    -- an index to start at
    IF (SELECT count(DISTINCT g) FROM unnest(gtops) g) = 1 THEN
        cmp := format('ROW(%s) %s ROW(%s)', array_to_string(keyleft, ', '), gtops[1],
                      array_to_string(keyright, ', '));
    ELSE
        i := cardinality(keyleft);
        cmp := format('%s %s %s', keyleft[i], gtops[i], keyright[i]);
        FOR i IN REVERSE cardinality(keyleft) - 1 .. 1 LOOP
            cmp := format('(%s %s %s OR (%s %s %s AND (%s)))',
                          keyleft[i], gtops[i], keyright[i],
                          keyleft[i], eqops[i], keyright[i], cmp);
        END LOOP;
        cmp := format('(%s %s %s AND %s)', keyleft[1], geop, keyright[1], cmp);
    END IF;

    -- "after": one value per key column, none NULL, or ROW(key) > ROW(after)
    -- is NULL for some rows and the batches skip them without a word
    IF "after" IS NOT NULL THEN
        IF array_ndims("after") > 1 THEN
            RAISE EXCEPTION 'cannot backfill "%" after %: it is not a one-dimensional array', rel, pg_catalog.quote_literal("after")
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass the last key backfill() or backfill_batch() returned, one value per key column.';
        END IF;
        IF cardinality("after") <> cardinality(keycols) THEN
            RAISE EXCEPTION 'cannot backfill "%" after %: the key (%) takes % values, not %',
                rel, pg_catalog.quote_literal("after"), array_to_string(key, ', '), cardinality(keycols), cardinality("after")
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass the last key backfill() or backfill_batch() returned, one value per key column.';
        END IF;
        IF array_position("after", NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'cannot backfill "%" after %: it holds a NULL', rel, pg_catalog.quote_literal("after")
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Key values are never NULL; pass the last key backfill() or backfill_batch() returned.';
        END IF;
    END IF;

    -- the "where" text alone first, so that its errors name WHERE
    IF check_where THEN
        RETURN format(E'SELECT FROM %s %I.%I AS %s WHERE (\n%s\n) LIMIT 0',
                      CASE WHEN c.relkind IN ('r', 'f') THEN 'ONLY' ELSE '' END,
                      c.nspname, c.relname, alias, coalesce("where", 'true'));
    END IF;
    RETURN format(
        E'SELECT %s AS attributes,\n'
        '       ARRAY[%s]::pg_catalog.text[] AS key\n'
        '  FROM %s %I.%I AS %s,\n'
        '       LATERAL (SELECT pg_catalog.to_jsonb(%s.*) AS r) AS _backfill_row\n'
        ' WHERE (%s)\n'
        '   AND ($1 IS NULL OR %s)\n'
        ' ORDER BY %s\n'
        ' LIMIT $2',
        attrs_sql,
        array_to_string(keycols, '::pg_catalog.text, ') || '::pg_catalog.text',
        CASE WHEN c.relkind IN ('r', 'f') THEN 'ONLY' ELSE '' END,
        c.nspname, c.relname, alias,
        alias,
        -- on lines of their own: a trailing comment ends with its line
        E'\n' || coalesce("where", 'true') || E'\n',
        cmp,
        array_to_string(keycols, ', '));
END
$$;

COMMENT ON FUNCTION _backfill_query(regclass, text, text, integer, text[], name, text[], boolean, text[]) IS
'internal: check backfill()''s arguments (with "after", its length against the key''s) and build its batch query (or, with check_where, a query that only checks the "where" text)';

-- One batch in the caller's transaction: the caller commits.  No SET
-- search_path: the "where" text is resolved as its caller wrote it.  So
-- every other name here, and in the batch query _backfill_query() builds,
-- is schema-qualified, operators and the types of its variables included
-- (PL/pgSQL resolves those when it compiles the function, in the path of
-- the session's first caller): a function, operator or type (a domain's
-- CHECK) that a role creates in a schema of the caller's search_path
-- (CVE-2018-1058) must never run with the caller's rights.
-- Only the "where" text resolves names in the caller's path.  It publishes
-- with its caller's rights, so it can stay executable by PUBLIC: a caller
-- needs EXECUTE on backfill() or backfill_batch() and on publish(), which
-- _backfill_query() checks before anything is read.
CREATE FUNCTION _backfill_batch(rel regclass, subject text, "where" text,
                                batch_size integer, "after" text[],
                                columns text[], "trigger" name, key text[],
                                OUT events integer, OUT last_key text[])
RETURNS record
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
AS $$
DECLARE
    q pg_catalog.text;
    r record;
BEGIN
    IF "where" IS NOT NULL THEN
        EXECUTE state_hub_events._backfill_query(rel, subject, "where", batch_size,
                                                 columns, "trigger", key, true, "after");
    END IF;
    q := state_hub_events._backfill_query(rel, subject, "where", batch_size,
                                          columns, "trigger", key, false, "after");
    events := 0;
    last_key := "after";
    -- [:] renumbers the values from 1, as the batch query reads them
    FOR r IN EXECUTE q USING "after"[:], batch_size LOOP
        IF pg_catalog.array_position(r.key, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'cannot backfill "%": a row''s key % holds a NULL', rel, r.key
                USING ERRCODE = 'null_value_not_allowed',
                      HINT = 'Order by a unique, non-null key (key => ''{column, ...}'').';
        END IF;
        PERFORM state_hub_events.publish(subject, r.attributes);
        events := events OPERATOR(pg_catalog.+) 1;
        last_key := r.key;
    END LOOP;
END
$$;

COMMENT ON FUNCTION _backfill_batch(regclass, text, text, integer, text[], text[], name, text[]) IS
'internal: one batch of backfill() and backfill_batch()';

CREATE FUNCTION backfill_batch("table" regclass, subject text,
                               "where" text DEFAULT NULL,
                               batch_size integer DEFAULT 1000,
                               "after" text[] DEFAULT NULL,
                               columns text[] DEFAULT NULL,
                               "trigger" name DEFAULT NULL,
                               key text[] DEFAULT NULL,
                               OUT events integer,
                               OUT last_key text[])
RETURNS record
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
AS $$
    SELECT b.events, b.last_key
      FROM state_hub_events._backfill_batch($1, $2, $3, $4, $5, $6, $7, $8) b
$$;

COMMENT ON FUNCTION backfill_batch(regclass, text, text, integer, text[], text[], name, text[]) IS
'publish the next batch of rows (after the key "after", in key order) as events with the table''s emit() mapping, in the current transaction; returns how many and the last key';

-- A procedure that COMMITs cannot SET search_path: it runs in its caller's,
-- so every name and operator in it is schema-qualified (see above).
CREATE PROCEDURE backfill("table" regclass, subject text,
                          "where" text DEFAULT NULL,
                          batch_size integer DEFAULT 1000,
                          INOUT "after" text[] DEFAULT NULL,
                          columns text[] DEFAULT NULL,
                          "trigger" name DEFAULT NULL,
                          key text[] DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    b record;
    total pg_catalog.int8 := 0;
    batches pg_catalog.int4 := 0;
    unpublished pg_catalog.int4;
BEGIN
    PERFORM state_hub_events._backfill_no_xact_block();
    LOOP
        SELECT * INTO b
          FROM state_hub_events._backfill_batch("table", subject, "where", batch_size,
                                                "after", columns, "trigger", key);
        EXIT WHEN b.events OPERATOR(pg_catalog.=) 0;
        COMMIT;
        -- immediate mode: a batch NATS did not take ends the backfill,
        -- resumable before that batch (its COMMIT's WARNING says why)
        unpublished := state_hub_events._last_commit_unpublished();
        IF unpublished OPERATOR(pg_catalog.>) 0 THEN
            RAISE EXCEPTION 'backfill of %: % of the % events of batch % were not published', "table",
                unpublished, b.events, batches OPERATOR(pg_catalog.+) 1
                USING ERRCODE = 'connection_failure',
                      DETAIL = 'The batch is committed, but its events were lost or not confirmed (see its WARNING); the batches before it were published.',
                      HINT = (CASE WHEN "after" IS NULL
                                   THEN 'Once NATS takes events again, CALL backfill() again without "after".'
                                   ELSE pg_catalog.format('Once NATS takes events again, CALL backfill() again with "after" => %s.',
                                                          pg_catalog.quote_literal("after")) END)
                             OPERATOR(pg_catalog.||) ' If the stream refuses one event for good (the WARNING says why), leave its row out with "where".';
        END IF;
        "after" := b.last_key;
        total := total OPERATOR(pg_catalog.+) b.events;
        batches := batches OPERATOR(pg_catalog.+) 1;
        RAISE NOTICE 'backfill of %: batch % committed (% events, % in all), after => %',
            "table", batches, b.events, total, pg_catalog.quote_literal("after")
            USING HINT = 'To resume after this batch, CALL backfill() again with this "after".';
        EXIT WHEN b.events OPERATOR(pg_catalog.<) batch_size;
    END LOOP;
    RAISE NOTICE 'backfill of % done (% events in % batches)', "table", total, batches;
END
$$;

COMMENT ON PROCEDURE backfill(regclass, text, text, integer, text[], text[], name, text[]) IS
're-announce existing rows as events with the table''s emit() mapping, in key order, one transaction per batch of batch_size rows; returns the last key';

-- Like publish(): the roles that publish get it.
REVOKE EXECUTE ON FUNCTION backfill_batch(regclass, text, text, integer, text[], text[], name, text[]) FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE backfill(regclass, text, text, integer, text[], text[], name, text[]) FROM PUBLIC;
-- The internal helpers stay executable by PUBLIC: backfill() calls them with
-- its caller's rights, and they read nothing a caller could not read.

-- ---------------------------------------------------------------------
-- end of 1.3, backfill
-- ---------------------------------------------------------------------

-- ---------------------------------------------------------------------
-- 1.3, security
-- ---------------------------------------------------------------------

-- CREATE TRIGGER: the event trigger runs as whoever creates a trigger, also
-- a role without USAGE on this schema (an application or migration role, a
-- pg_restore as the tables' owner).  It picks the emit() triggers out
-- through the catalogs alone (no name lookup in this schema, no privilege
-- check) and validates only those; a role that names emit() in CREATE
-- TRIGGER holds USAGE on the schema and EXECUTE on emit() already.
CREATE OR REPLACE FUNCTION _check_new_triggers()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd record;
BEGIN
    FOR cmd IN SELECT t.oid, t.tgfoid
                 FROM pg_catalog.pg_event_trigger_ddl_commands() d
                 JOIN pg_catalog.pg_trigger t ON t.oid = d.objid
                 JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                WHERE d.object_type = 'trigger'
                  AND n.nspname = 'state_hub_events' AND p.proname = 'emit'
                  AND p.pronargs = 0
    LOOP
        PERFORM state_hub_events._check_trigger(cmd.oid, cmd.tgfoid);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------
-- end of 1.3, security
-- ---------------------------------------------------------------------

-- ---------------------------------------------------------------------
-- 1.3, the SQL surface as the contract states it
-- ---------------------------------------------------------------------

-- pending() is declared RETURNS TABLE, as documented (1.0 to 1.2 declared
-- the same columns as OUT parameters, which catalogs show as SETOF record).
-- CREATE OR REPLACE keeps its privileges.
CREATE OR REPLACE FUNCTION pending()
RETURNS TABLE (id uuid, subject text, attributes jsonb)
AS 'MODULE_PATHNAME', 'she_pending'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

-- since 1.2 the publisher process answers ping() from its live connection
COMMENT ON FUNCTION ping() IS
'ask the publisher process about its live NATS connection and report the server''s and the stream''s facts, or raise an error saying why not';
