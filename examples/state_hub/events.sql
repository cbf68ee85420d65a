-- examples/state_hub/events.sql
--    Wires every subject of the state hub's catalog (docs/subject-catalog.md)
--    with state_hub_events.  Run as a superuser after schema.sql and
--    CREATE EXTENSION state_hub_events.
--
--    Trigger functions that need joins or transition tests are SECURITY
--    DEFINER, owned by hub_publisher (the one role allowed to publish), with
--    a fixed search_path, so an application role that may only write the
--    tables fires them all but cannot publish on its own.
--
--    Every event carries exactly the catalog's attributes under its names;
--    optional ones (marked ? in the catalog) are always present, null when
--    unknown.

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hub_publisher') THEN
        CREATE ROLE hub_publisher NOLOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA state_hub_events TO hub_publisher;
GRANT EXECUTE ON FUNCTION state_hub_events.publish(text, jsonb) TO hub_publisher;
GRANT USAGE ON SCHEMA hub TO hub_publisher;
GRANT SELECT ON ALL TABLES IN SCHEMA hub TO hub_publisher;
GRANT UPDATE (status, updated_at) ON hub.domain_goals, hub.tasks TO hub_publisher;

CREATE SCHEMA hub_events AUTHORIZATION hub_publisher;

-- org.statehub.repo.registered: a repo is inserted.
CREATE FUNCTION hub_events.repo_registered() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM state_hub_events.publish('org.statehub.repo.registered', jsonb_build_object(
        'repo_id',     NEW.id,
        'repo_slug',   NEW.slug,
        'domain_slug', (SELECT d.slug FROM hub.domains d WHERE d.id = NEW.domain_id),
        'remote_url',  NEW.remote_url,
        'local_path',  NEW.local_path));
    RETURN NULL;
END $$;

-- org.statehub.workplan.completed, then the legacy
-- org.statehub.workstream.completed: only on the transition to finished.
CREATE FUNCTION hub_events.workplan_completed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM state_hub_events.publish('org.statehub.workplan.completed', jsonb_build_object(
        'workplan_id',          NEW.id,
        'legacy_workstream_id', NEW.legacy_workstream_id,
        'slug',                 NEW.slug,
        'title',                NEW.title,
        'topic_id',             NEW.topic_id,
        'repo_id',              NEW.repo_id,
        'repo_goal_id',         NEW.repo_goal_id));
    PERFORM state_hub_events.publish('org.statehub.workstream.completed', jsonb_build_object(
        'workstream_id', NEW.legacy_workstream_id,
        'slug',          NEW.slug,
        'title',         NEW.title,
        'topic_id',      NEW.topic_id,
        'repo_id',       NEW.repo_id,
        'repo_goal_id',  NEW.repo_goal_id));
    RETURN NULL;
END $$;

-- org.statehub.decision.resolved: on the transition to resolved.
-- rationale_snippet is the rationale cut to 200 characters (left() counts
-- characters, never splitting a multibyte character).
CREATE FUNCTION hub_events.decision_resolved() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM state_hub_events.publish('org.statehub.decision.resolved', jsonb_build_object(
        'decision_id',       NEW.id,
        'title',             NEW.title,
        'topic_id',          NEW.topic_id,
        'workstream_id',     (SELECT w.legacy_workstream_id FROM hub.workplans w
                               WHERE w.id = NEW.workplan_id),
        'decided_by',        NEW.decided_by,
        'rationale_snippet', left(coalesce(NEW.rationale, ''), 200)));
    RETURN NULL;
END $$;

-- org.statehub.domain.goal.activated: on the transition to active.  The same
-- transaction marks the domain's other active goals superseded, and the
-- event lists them (an empty array when none).
CREATE FUNCTION hub_events.domain_goal_activated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    superseded uuid[];
BEGIN
    WITH s AS (
        UPDATE hub.domain_goals g
           SET status = 'superseded', updated_at = now()
         WHERE g.domain_id = NEW.domain_id AND g.status = 'active' AND g.id <> NEW.id
        RETURNING g.id)
    SELECT coalesce(array_agg(s.id ORDER BY s.id), '{}') INTO superseded FROM s;

    PERFORM state_hub_events.publish('org.statehub.domain.goal.activated', jsonb_build_object(
        'goal_id',             NEW.id,
        'domain_id',           NEW.domain_id,
        'domain_slug',         (SELECT d.slug FROM hub.domains d WHERE d.id = NEW.domain_id),
        'title',               NEW.title,
        'superseded_goal_ids', to_jsonb(superseded)));
    RETURN NULL;
END $$;

-- org.statehub.decision.resolved comes from resolving a decision (with a
-- fixed search_path, like every function here that can have one):
CREATE FUNCTION hub_events.resolve_decision(decision uuid, decided_by text, rationale text)
RETURNS void LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE hub.decisions
       SET status = 'resolved', decided_by = $2, rationale = $3, resolved_at = now()
     WHERE id = $1;
$$;

-- org.statehub.task.stale: the sweep.  Tasks of finished or abandoned
-- workplans not updated for `older_than` are cancelled, one event per task,
-- in the sweep's own transaction.  Returns how many.  Call it from an admin
-- session or a scheduler (pg_cron, activity-core).
CREATE FUNCTION hub_events.sweep_stale_tasks(older_than interval DEFAULT '14 days')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    n integer := 0;
BEGIN
    FOR t IN
        SELECT k.id, k.title, k.status, w.legacy_workstream_id, w.status AS workplan_status
          FROM hub.tasks k JOIN hub.workplans w ON w.id = k.workplan_id
         WHERE w.status IN ('finished', 'abandoned')
           AND k.status NOT IN ('done', 'cancelled')
           AND k.updated_at < now() - older_than
         ORDER BY k.updated_at, k.id
           FOR UPDATE OF k
    LOOP
        UPDATE hub.tasks SET status = 'cancelled', updated_at = now() WHERE id = t.id;
        PERFORM state_hub_events.publish('org.statehub.task.stale', jsonb_build_object(
            'task_id',            t.id,
            'workstream_id',      t.legacy_workstream_id,
            'workstream_status',  t.workplan_status,
            'task_title',         t.title,
            'task_status_before', t.status));
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- Re-announcing registered repos (a consumer deployed after the repos
-- exist): registered_repos gives each repo exactly the attributes of its
-- org.statehub.repo.registered event, and state_hub_events.backfill()
-- publishes one event per row, in batches of batch_size, one transaction
-- each, ordered by repo_id.  "where" filters on the view's columns, e.g.
-- 'domain_slug = ''custodian'''; "after" resumes after the repo_id the last
-- NOTICE named.  Run it as hub_publisher (backfill() runs with its
-- caller's rights), outside a transaction block:
--     SET ROLE hub_publisher; CALL hub_events.reannounce_repos();
CREATE VIEW hub_events.registered_repos AS
SELECT r.id         AS repo_id,
       r.slug       AS repo_slug,
       (SELECT d.slug FROM hub.domains d WHERE d.id = r.domain_id) AS domain_slug,
       r.remote_url AS remote_url,
       r.local_path AS local_path
  FROM hub.repos r;

-- (a procedure that COMMITs cannot fix its search_path: every name in it is
-- qualified, and "where" is resolved in the caller's path)
CREATE PROCEDURE hub_events.reannounce_repos("where" text DEFAULT NULL,
                                             batch_size integer DEFAULT 1000,
                                             INOUT "after" text[] DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    CALL state_hub_events.backfill('hub_events.registered_repos', 'org.statehub.repo.registered',
                                   "where", batch_size, "after",
                                   columns => '{}', key => '{repo_id}');
END $$;

GRANT EXECUTE ON PROCEDURE state_hub_events.backfill(regclass, text, text, integer, text[], text[], name, text[])
    TO hub_publisher;

ALTER FUNCTION hub_events.repo_registered() OWNER TO hub_publisher;
ALTER FUNCTION hub_events.workplan_completed() OWNER TO hub_publisher;
ALTER FUNCTION hub_events.decision_resolved() OWNER TO hub_publisher;
ALTER FUNCTION hub_events.domain_goal_activated() OWNER TO hub_publisher;
ALTER FUNCTION hub_events.sweep_stale_tasks(interval) OWNER TO hub_publisher;
ALTER VIEW hub_events.registered_repos OWNER TO hub_publisher;
ALTER PROCEDURE hub_events.reannounce_repos(text, integer, text[]) OWNER TO hub_publisher;
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA hub_events FROM PUBLIC;

CREATE TRIGGER repo_registered AFTER INSERT ON hub.repos
    FOR EACH ROW EXECUTE FUNCTION hub_events.repo_registered();
CREATE TRIGGER workplan_completed AFTER UPDATE OF status ON hub.workplans
    FOR EACH ROW WHEN (NEW.status = 'finished' AND OLD.status IS DISTINCT FROM 'finished')
    EXECUTE FUNCTION hub_events.workplan_completed();
CREATE TRIGGER workplan_created_finished AFTER INSERT ON hub.workplans
    FOR EACH ROW WHEN (NEW.status = 'finished')
    EXECUTE FUNCTION hub_events.workplan_completed();
CREATE TRIGGER decision_resolved AFTER UPDATE OF status ON hub.decisions
    FOR EACH ROW WHEN (NEW.status = 'resolved' AND OLD.status IS DISTINCT FROM 'resolved')
    EXECUTE FUNCTION hub_events.decision_resolved();
CREATE TRIGGER domain_goal_activated AFTER UPDATE OF status ON hub.domain_goals
    FOR EACH ROW WHEN (NEW.status = 'active' AND OLD.status IS DISTINCT FROM 'active')
    EXECUTE FUNCTION hub_events.domain_goal_activated();
CREATE TRIGGER domain_goal_created_active AFTER INSERT ON hub.domain_goals
    FOR EACH ROW WHEN (NEW.status = 'active')
    EXECUTE FUNCTION hub_events.domain_goal_activated();

-- The application role: may write the tables, may not publish.
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hub_app') THEN
        CREATE ROLE hub_app NOLOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA hub, hub_events TO hub_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA hub TO hub_app;
GRANT EXECUTE ON FUNCTION hub_events.resolve_decision(uuid, text, text) TO hub_app;
