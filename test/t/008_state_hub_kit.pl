
# 008_state_hub_kit.pl
#    The state hub kit (examples/state_hub): every catalog subject driven
#    once by an application role that may only write the tables, every no-op
#    case (repeated update, rollback, savepoint), exact attribute sets, and
#    every message validated with the consumers' EventEnvelope model.

use strict;
use warnings;

use Encode ();
use File::Basename qw(dirname);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $top = dirname(__FILE__) . '/../..';
my $nats = NatsServer->new->start;
my $node = she_node('kit', $nats);
$node->safe_psql('postgres', slurp_file("$top/examples/state_hub/schema.sql"));
$node->safe_psql('postgres', slurp_file("$top/examples/state_hub/events.sql"));

my %catalog = (
    'org.statehub.repo.registered' => [qw(repo_id repo_slug domain_slug remote_url local_path)],
    'org.statehub.workplan.completed' =>
      [qw(workplan_id legacy_workstream_id slug title topic_id repo_id repo_goal_id)],
    'org.statehub.workstream.completed' => [qw(workstream_id slug title topic_id repo_id repo_goal_id)],
    'org.statehub.decision.resolved' =>
      [qw(decision_id title topic_id workstream_id decided_by rationale_snippet)],
    'org.statehub.domain.goal.activated' => [qw(goal_id domain_id domain_slug title superseded_goal_ids)],
    'org.statehub.task.stale' =>
      [qw(task_id workstream_id workstream_status task_title task_status_before)],
);

my $seq = 1;
my @all;

# Run SQL as the application role; return the messages that arrived.
sub as_app
{
    my ($sql) = @_;
    $node->safe_psql('postgres', "SET ROLE hub_app; $sql");
    return arrived();
}

sub arrived
{
    my @m = $nats->stream_info ? $nats->messages(undef, $seq) : ();
    $seq += @m;
    push @all, @m;
    return @m;
}

sub one_row { return $node->safe_psql('postgres', $_[0]); }

sub check_attrs
{
    my ($m, $name) = @_;
    is_deeply([ sort keys %{ $m->{body}{attributes} } ], [ sort @{ $catalog{ $m->{subject} } } ],
        "$name: exactly the catalog's attributes of $m->{subject}");
}

# --- the application role cannot publish on its own
my ($ret, $out, $err) = $node->psql('postgres',
    q{SET ROLE hub_app; SELECT state_hub_events.publish('org.statehub.repo.registered')});
like($err, qr/permission denied for (function publish|schema state_hub_events)/, 'hub_app cannot publish directly');

# --- repo.registered
my @m = as_app(q{
    INSERT INTO hub.domains (slug, name) VALUES ('custodian', 'Custodian');
    INSERT INTO hub.repos (slug, domain_id, remote_url)
         SELECT 'state-hub', id, 'git@example.org:org/state-hub.git' FROM hub.domains;
});
is(scalar @m, 1, 'inserting a repo publishes one event');
is($m[0]{subject}, 'org.statehub.repo.registered', 'repo.registered');
check_attrs($m[0], 'repo');
my $repo_id = one_row(q{SELECT id FROM hub.repos WHERE slug = 'state-hub'});
is_deeply($m[0]{body}{attributes},
    { repo_id => $repo_id, repo_slug => 'state-hub', domain_slug => 'custodian',
      remote_url => 'git@example.org:org/state-hub.git', local_path => undef },
    'repo.registered attributes, unknown optional ones null');

@m = as_app(q{BEGIN; INSERT INTO hub.repos (slug, domain_id) SELECT 'gone', id FROM hub.domains; ROLLBACK;});
is(scalar @m, 0, 'a rolled-back repo insert publishes nothing');
@m = as_app(q{
    BEGIN;
    SAVEPOINT s;
    INSERT INTO hub.repos (slug, domain_id) SELECT 'undone', id FROM hub.domains;
    ROLLBACK TO s;
    INSERT INTO hub.repos (slug, domain_id, local_path) SELECT 'kept', id, '/srv/kept' FROM hub.domains;
    COMMIT;
});
is_deeply([ map { $_->{body}{attributes}{repo_slug} } @m ], ['kept'],
    'a repo inserted in a rolled-back savepoint publishes nothing; the kept one does');

# --- workplan.completed then workstream.completed, only on the transition
as_app(q{
    INSERT INTO hub.topics (domain_id, title) SELECT id, 'Eventing' FROM hub.domains;
    INSERT INTO hub.repo_goals (repo_id, title) SELECT id, 'Ship events' FROM hub.repos WHERE slug = 'state-hub';
    INSERT INTO hub.workplans (slug, title, topic_id, repo_id, repo_goal_id, status)
         SELECT 'WP-1', 'Wire events', t.id, r.id, g.id, 'active'
           FROM hub.topics t, hub.repos r, hub.repo_goals g WHERE r.slug = 'state-hub';
    INSERT INTO hub.workplans (slug, title, topic_id, status)
         SELECT 'WP-2', 'Write docs', t.id, 'active' FROM hub.topics t;
});
is(scalar(arrived()), 0, 'creating active workplans publishes nothing');
@m = as_app(q{UPDATE hub.workplans SET status = 'finished' WHERE slug = 'WP-1'});
is_deeply([ map { $_->{subject} } @m ],
    [qw(org.statehub.workplan.completed org.statehub.workstream.completed)],
    'finishing a workplan publishes workplan.completed, then workstream.completed');
check_attrs($m[0], 'workplan');
check_attrs($m[1], 'workstream');
my ($wp_id, $legacy, $topic_id, $goal_id) = split /\|/,
  one_row(q{SELECT id, legacy_workstream_id, topic_id, repo_goal_id FROM hub.workplans WHERE slug = 'WP-1'});
is_deeply($m[0]{body}{attributes},
    { workplan_id => $wp_id, legacy_workstream_id => $legacy, slug => 'WP-1', title => 'Wire events',
      topic_id => $topic_id, repo_id => $repo_id, repo_goal_id => $goal_id },
    'workplan.completed attributes');
is_deeply($m[1]{body}{attributes},
    { workstream_id => $legacy, slug => 'WP-1', title => 'Wire events',
      topic_id => $topic_id, repo_id => $repo_id, repo_goal_id => $goal_id },
    'workstream.completed attributes (workstream_id is the legacy id)');
is($m[0]{body}{timestamp}, $m[1]{body}{timestamp}, 'both carry the commit timestamp');

@m = as_app(q{UPDATE hub.workplans SET status = 'finished', title = 'Wire events (v2)' WHERE slug = 'WP-1'});
is(scalar @m, 0, 'an update that leaves a workplan finished publishes nothing');
@m = as_app(q{BEGIN; UPDATE hub.workplans SET status = 'finished' WHERE slug = 'WP-2'; ROLLBACK;});
is(scalar @m, 0, 'a rolled-back finish publishes nothing');
@m = as_app(q{UPDATE hub.workplans SET status = 'abandoned' WHERE slug = 'WP-2'});
is(scalar @m, 0, 'abandoning a workplan publishes nothing');
@m = as_app(q{UPDATE hub.workplans SET status = 'finished' WHERE slug = 'WP-2'});
is(scalar @m, 2, 'finishing the abandoned workplan publishes both events');
is($m[0]{body}{attributes}{repo_id}, undef, 'optional repo_id is null when unknown');

# --- decision.resolved
as_app(q{
    INSERT INTO hub.decisions (title, topic_id, workplan_id)
         SELECT 'Publish from the database', w.topic_id, w.id FROM hub.workplans w WHERE slug = 'WP-1';
    INSERT INTO hub.decisions (title) VALUES ('Loose decision');
});
my $rationale = Encode::encode('UTF-8', "\x{e9}" x 150 . 'x' x 100);
@m = as_app(qq{SELECT hub_events.resolve_decision(id, 'tegwick', '$rationale') FROM hub.decisions WHERE title = 'Publish from the database'});
is(scalar @m, 1, 'resolving a decision publishes one event');
check_attrs($m[0], 'decision');
my $dec_id = one_row(q{SELECT id FROM hub.decisions WHERE title = 'Publish from the database'});
my $snippet = $m[0]{body}{attributes}{rationale_snippet};
is(length($snippet), 200, 'rationale_snippet is cut to 200 characters');
is($snippet, "\x{e9}" x 150 . 'x' x 50, 'on a character boundary (multibyte characters intact)');
is_deeply({ %{ $m[0]{body}{attributes} }, rationale_snippet => 'cut' },
    { decision_id => $dec_id, title => 'Publish from the database', topic_id => $topic_id,
      workstream_id => $legacy, decided_by => 'tegwick', rationale_snippet => 'cut' },
    'decision.resolved attributes (workstream_id is the workplan\'s legacy id)');
@m = as_app(q{SELECT hub_events.resolve_decision(id, 'someone', 'again') FROM hub.decisions WHERE title = 'Publish from the database'});
is(scalar @m, 0, 'resolving an already resolved decision publishes nothing');
@m = as_app(q{SELECT hub_events.resolve_decision(id, 'tegwick', 'short') FROM hub.decisions WHERE title = 'Loose decision'});
is_deeply([ @{ $m[0]{body}{attributes} }{qw(topic_id workstream_id rationale_snippet)} ], [ undef, undef, 'short' ],
    'a decision without topic or workplan: nulls');

# --- domain.goal.activated, superseding the domain's other active goals
@m = as_app(q{INSERT INTO hub.domain_goals (domain_id, title, status) SELECT id, 'Goal 1', 'active' FROM hub.domains});
is(scalar @m, 1, 'a goal created active publishes domain.goal.activated');
check_attrs($m[0], 'goal');
is_deeply($m[0]{body}{attributes}{superseded_goal_ids}, [], 'superseded_goal_ids is an empty array when none');
my $g1 = one_row(q{SELECT id FROM hub.domain_goals WHERE title = 'Goal 1'});
as_app(q{INSERT INTO hub.domain_goals (domain_id, title) SELECT id, 'Goal 2' FROM hub.domains});
is(scalar(arrived()), 0, 'a draft goal publishes nothing');
@m = as_app(q{BEGIN; UPDATE hub.domain_goals SET status = 'active' WHERE title = 'Goal 2'; ROLLBACK;});
is(scalar @m, 0, 'a rolled-back activation publishes nothing');
is(one_row(q{SELECT status FROM hub.domain_goals WHERE title = 'Goal 1'}), 'active', 'and supersedes nothing');
@m = as_app(q{UPDATE hub.domain_goals SET status = 'active' WHERE title = 'Goal 2'});
my ($g2, $dom) = split /\|/, one_row(q{SELECT id, domain_id FROM hub.domain_goals WHERE title = 'Goal 2'});
is_deeply($m[0]{body}{attributes},
    { goal_id => $g2, domain_id => $dom, domain_slug => 'custodian', title => 'Goal 2',
      superseded_goal_ids => [$g1] },
    'activating a goal lists the goal it superseded');
is(one_row(q{SELECT status FROM hub.domain_goals WHERE title = 'Goal 1'}), 'superseded',
    'the kit marked the other active goal superseded in the same transaction');
@m = as_app(q{UPDATE hub.domain_goals SET status = 'active', title = 'Goal 2!' WHERE title = 'Goal 2'});
is(scalar @m, 0, 'an update that leaves a goal active publishes nothing');

# --- task.stale: the sweep
as_app(q{
    INSERT INTO hub.tasks (workplan_id, title, status, updated_at)
    SELECT w.id, v.title, v.status, now() - v.age
      FROM hub.workplans w,
           (VALUES ('old todo', 'todo', interval '30 days'),
                   ('old blocked', 'blocked', interval '20 days'),
                   ('recent', 'todo', interval '1 day'),
                   ('old done', 'done', interval '30 days')) v(title, status, age)
     WHERE w.slug = 'WP-1';
    INSERT INTO hub.workplans (slug, title, topic_id, status) SELECT 'WP-3', 'Live', id, 'active' FROM hub.topics;
    INSERT INTO hub.tasks (workplan_id, title, updated_at)
         SELECT id, 'active plan task', now() - interval '90 days' FROM hub.workplans WHERE slug = 'WP-3';
});
arrived();
my $swept = one_row(q{SELECT hub_events.sweep_stale_tasks('14 days')});
@m = arrived();
is($swept, 2, 'the sweep returns how many tasks it cancelled');
is_deeply([ sort map { $_->{body}{attributes}{task_title} } @m ], ['old blocked', 'old todo'],
    'one task.stale per stale task of a finished workplan, nothing for recent, done or active-plan tasks');
check_attrs($_, 'task') for @m;
my ($t) = grep { $_->{body}{attributes}{task_title} eq 'old blocked' } @m;
is_deeply({ %{ $t->{body}{attributes} }, task_id => 'x' },
    { task_id => 'x', workstream_id => $legacy, workstream_status => 'finished',
      task_title => 'old blocked', task_status_before => 'blocked' },
    'task.stale attributes');
is(one_row(q{SELECT string_agg(status, ',' ORDER BY title) FROM hub.tasks WHERE title LIKE 'old %'}),
    'cancelled,done,cancelled', 'the stale tasks are cancelled in the sweep\'s transaction');
is(one_row(q{SELECT hub_events.sweep_stale_tasks()}), 0, 'a second sweep finds nothing');
is(scalar(arrived()), 0, 'and publishes nothing');

# --- re-announcing the registered repos: the events repo.registered gave
my %registered = map { $_->{body}{attributes}{repo_id} => $_->{body}{attributes} }
  grep { $_->{subject} eq 'org.statehub.repo.registered' } @all;
($ret, $out, $err) = $node->psql('postgres', q{SET ROLE hub_app; CALL hub_events.reannounce_repos()});
like($err, qr/permission denied for procedure reannounce_repos/, 'hub_app cannot re-announce repos');
is(scalar(arrived()), 0, 'and publishes nothing');
($ret, $out, $err) = $node->psql('postgres', q{SET ROLE hub_publisher; CALL hub_events.reannounce_repos(batch_size => 1)});
is($ret, 0, 'hub_publisher re-announces the registered repos') or diag($err);
@m = arrived();
is(scalar @m, scalar keys %registered, 'one repo.registered per registered repo');
is_deeply([ map { $_->{body}{attributes}{repo_id} } @m ], [ sort keys %registered ], 'ordered by repo_id');
is_deeply([ map { $_->{body}{attributes} } @m ], [ map { $registered{$_} } sort keys %registered ],
    'with exactly the attributes the registration published');
is(() = $err =~ /NOTICE:  backfill of hub_events.registered_repos: batch \d+ committed/g, scalar @m,
    'a NOTICE per batch of one');
($ret, $out, $err) = $node->psql('postgres',
    q{SET ROLE hub_publisher; CALL hub_events.reannounce_repos('local_path IS NOT NULL')});
@m = arrived();
is_deeply([ map { $_->{body}{attributes}{repo_slug} } @m ], ['kept'], 'a "where" text selects the repos to re-announce');

# --- every message: catalog subject, exact attributes, the consumers' model
my %seen = map { $_->{subject} => 1 } @all;
is_deeply([ sort keys %seen ], [ sort keys %catalog ], 'all six catalog subjects were published');
# the strict check in Perl: six keys, uuid v4, header = id, UTC timestamp
check_envelope($_, subject => $_->{subject}, name => "$_->{subject} #$_->{seq}") for @all;
# and the consumers' own model, in Python (make deps installs python3-pydantic)
my $bodies = join('', map { "$_->{raw}\n" } @all);
my $py = (grep { -x $_ && system("$_ -c 'import pydantic' 2>/dev/null") == 0 }
      qw(/usr/bin/python3 /usr/local/bin/python3))[0];
ok($py, 'a python3 with pydantic is available (python3-pydantic)');
my $res = $py ? run_validator($py, $bodies) : 'not run';
like($res, qr/^ok @{[ scalar @all ]} /, "every message validates against EventEnvelope (extra='forbid'): $res");

sub run_validator
{
    my ($py, $input) = @_;
    my ($in, $out);
    require IPC::Run;
    IPC::Run::run([ $py, "$top/test/validate_envelopes.py" ], \$input, \$out, \$out);
    chomp $out;
    return $out;
}

$node->stop;
$nats->stop;
done_testing();
