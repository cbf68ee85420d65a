-- examples/state_hub/schema.sql
--    A reference state hub schema: domains, repos, topics, workplans (with
--    their legacy workstream ids), decisions, domain goals and tasks.
--    The application writes these tables; events.sql wires the lifecycle
--    events of the subject catalog onto them.

CREATE SCHEMA hub;

CREATE TABLE hub.domains (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL
);

CREATE TABLE hub.repos (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE,
    domain_id   uuid NOT NULL REFERENCES hub.domains,
    remote_url  text,
    local_path  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hub.repo_goals (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    repo_id     uuid NOT NULL REFERENCES hub.repos,
    title       text NOT NULL
);

CREATE TABLE hub.topics (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    domain_id   uuid NOT NULL REFERENCES hub.domains,
    title       text NOT NULL
);

CREATE TABLE hub.workplans (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_workstream_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    slug                 text NOT NULL UNIQUE,
    title                text NOT NULL,
    topic_id             uuid NOT NULL REFERENCES hub.topics,
    repo_id              uuid REFERENCES hub.repos,
    repo_goal_id         uuid REFERENCES hub.repo_goals,
    status               text NOT NULL DEFAULT 'planned'
                         CHECK (status IN ('planned', 'active', 'blocked', 'finished', 'abandoned')),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hub.decisions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title       text NOT NULL,
    topic_id    uuid REFERENCES hub.topics,
    workplan_id uuid REFERENCES hub.workplans,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    decided_by  text,
    rationale   text,
    resolved_at timestamptz
);

CREATE TABLE hub.domain_goals (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    domain_id   uuid NOT NULL REFERENCES hub.domains,
    title       text NOT NULL,
    status      text NOT NULL DEFAULT 'draft'
                CHECK (status IN ('draft', 'active', 'superseded', 'achieved')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hub.tasks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workplan_id uuid NOT NULL REFERENCES hub.workplans,
    title       text NOT NULL,
    status      text NOT NULL DEFAULT 'todo'
                CHECK (status IN ('todo', 'in_progress', 'blocked', 'done', 'cancelled')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON hub.tasks (workplan_id);
