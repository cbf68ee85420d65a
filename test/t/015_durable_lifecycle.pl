
# 015_durable_lifecycle.pl
#    Durable delivery around the life of databases and the extension: the
#    launcher starts the worker only for a database that exists (no FATAL
#    loop), follows state_hub_events.database at reload, stops the worker
#    for DROP DATABASE and ALTER DATABASE ... RENAME (no FORCE needed) and
#    says what a drop lost; DROP EXTENSION is refused while the outbox holds
#    events; ALTER EXTENSION UPDATE from 1.0 keeps the backlog.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('lifecycle', $nats, preload => 1, conf => q{
log_min_messages = log
state_hub_events.database = 'hub'
state_hub_events.delivery = 'durable'
state_hub_events.publish_timeout = '1s'
state_hub_events.connect_timeout = '1s'
state_hub_events.retry_interval = '300ms'
});

# log lines written since the offset
sub log_since
{
    my ($offset) = @_;
    my $log = slurp_file($node->logfile);
    return substr($log, $offset);
}

sub status
{
    my ($col) = @_;
    return $node->safe_psql('postgres', "SELECT $col FROM state_hub_events.worker_status()");
}

sub wait_worker { return $node->poll_query_until('postgres', 'SELECT worker_pid IS NOT NULL FROM state_hub_events.worker_status()'); }
sub wait_no_worker { return $node->poll_query_until('postgres', 'SELECT worker_pid IS NULL FROM state_hub_events.worker_status()'); }

# How many messages on $subject reached the stream: wait (the stream's
# state, polled, at most 60 s) until there are $n.
sub subject_count
{
    my ($subject, $n) = @_;
    return $nats->wait_for_count($n, subject => $subject, timeout => 60);
}

# How many messages on $subject the stream holds now (for events that must
# never arrive: asked after a later event of the same worker arrived, which
# the worker publishes in commit order).
sub subject_now
{
    my ($subject) = @_;
    return $nats->count(undef, subject => $subject);
}

# --- the served database does not exist yet: one WARNING, no FATAL loop
my $missing_re = qr/database "hub" \(state_hub_events\.database\) does not exist/;
ok(wait_until('the launcher to report the missing database', 60, sub { log_since(0) =~ $missing_re }),
    'the launcher reports the missing database');
sleep 3;    # an observation window: nothing more may be logged in it
my $log = log_since(0);
my @warn = ($log =~ /$missing_re/g);
is(scalar @warn, 1, 'a missing database is reported once');
unlike($log, qr/FATAL/, 'and the worker does not die and restart over it');
is(status('worker_pid'), '', 'no worker runs');
like(status('last_error'), qr/database "hub".*does not exist/, 'worker_status() says why');
my @procs = split /\n/, $node->safe_psql('postgres', q{SELECT backend_type FROM pg_stat_activity WHERE backend_type LIKE 'state_hub_events%'});
is_deeply(\@procs, ['state_hub_events launcher'], 'the launcher runs');

# --- the database appears: the worker starts for it
$node->safe_psql('postgres', 'CREATE DATABASE hub');
$node->safe_psql('hub', 'CREATE EXTENSION state_hub_events');
ok(wait_worker(), 'the worker starts once the database exists');
$node->safe_psql('hub', q{SELECT state_hub_events.publish('org.t.l.first')});
is(subject_count('org.t.l.first', 1), 1, 'and publishes its outbox');

# --- DROP DATABASE with a backlog: no FORCE needed, the loss is reported
$nats->stop;
$node->safe_psql('hub', q{SELECT count(state_hub_events.publish('org.t.l.dropped')) FROM generate_series(1, 20)});
$node->poll_query_until('postgres', 'SELECT backlog_events = 20 FROM state_hub_events.worker_status()');
my $offset = -s $node->logfile;
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE hub');
is($ret, 0, 'DROP DATABASE of the served database succeeds without FORCE');
like($err, qr/WARNING:  state_hub_events: database "hub" held 20 durable events not yet published; they are dropped with it/,
    'and warns how many unpublished events went with it');
like(log_since($offset), qr/worker for database "hub" stopping on request/, 'the worker stopped before the drop');
wait_until('the launcher to notice the dropped database', 60, sub { log_since($offset) =~ $missing_re });
sleep 3;    # an observation window: no FATAL may be logged in it
$log = log_since($offset);
unlike($log, qr/FATAL/, 'no FATAL after the drop');
like($log, qr/database "hub" \(state_hub_events\.database\) does not exist/, 'the launcher notices the database is gone');
is(status('worker_pid'), '', 'no worker runs');
is(status('backlog_events'), '0', 'the dropped backlog is no longer counted');

# --- recreated: served again; the dropped events never appear
$node->safe_psql('postgres', 'CREATE DATABASE hub');
$node->safe_psql('hub', 'CREATE EXTENSION state_hub_events');
ok(wait_worker(), 'the worker serves the recreated database');
$nats->start;
$node->safe_psql('hub', q{SELECT state_hub_events.publish('org.t.l.second')});
is(subject_count('org.t.l.second', 1), 1, 'which publishes');
is(subject_now('org.t.l.dropped'), 0, 'the dropped database\'s events are gone, as warned');

# --- a DROP DATABASE that fails leaves the worker running
my $stdin = '';
my $holder = IPC::Run::start(['psql', '-X', '-q', '-d', $node->connstr('hub')], '<', \$stdin, '>', \my $hout, '2>', \my $herr);
$stdin .= "SELECT pg_sleep(60);\n";
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE datname = 'hub' AND backend_type = 'client backend'});
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE hub');
isnt($ret, 0, 'DROP DATABASE fails while a client is connected');
like($err, qr/being accessed by other users/, 'for the usual reason');
ok(wait_worker(), 'and the worker is started again');
$holder->kill_kill;
$node->safe_psql('hub', q{SELECT state_hub_events.publish('org.t.l.after_failed_drop')});
is(subject_count('org.t.l.after_failed_drop', 1), 1, 'and publishes');

# --- RENAME: the worker steps aside; the setting follows at reload
($ret, $out, $err) = $node->psql('postgres', 'ALTER DATABASE hub RENAME TO hub2');
is($ret, 0, 'ALTER DATABASE ... RENAME of the served database succeeds');
like($err, qr/set state_hub_events\.database = 'hub2' and reload/, 'and says how to go on');
ok(wait_no_worker(), 'the worker stopped');
$node->safe_psql('postgres', q{ALTER SYSTEM SET state_hub_events.database = 'hub2'; SELECT pg_reload_conf()});
ok(wait_worker(), 'after a reload the worker serves the new name');
$node->safe_psql('hub2', q{SELECT state_hub_events.publish('org.t.l.renamed')});
is(subject_count('org.t.l.renamed', 1), 1, 'and publishes');

# --- the setting changes while the worker runs: it moves, no restart
my $pid = status('worker_pid');
$node->safe_psql('postgres', q{ALTER SYSTEM SET state_hub_events.database = 'postgres'; SELECT pg_reload_conf()});
$node->poll_query_until('postgres', "SELECT worker_pid IS NOT NULL AND worker_pid <> $pid FROM state_hub_events.worker_status()");
is($node->safe_psql('postgres', q{SELECT datname FROM pg_stat_activity WHERE backend_type = 'state_hub_events worker'}),
    'postgres', 'a reload moves the worker to the newly named database');
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.l.moved')});
is(subject_count('org.t.l.moved', 1), 1, 'which publishes');

# --- other commands that need the served database without connections
$offset = -s $node->logfile;
($ret, $out, $err) = $node->psql('hub2', 'CREATE DATABASE hubcopy TEMPLATE postgres');
is($ret, 0, 'CREATE DATABASE ... TEMPLATE of the served database works: the worker steps aside') or diag($err);
ok(wait_worker(), 'and comes back');
my $tsdir = PostgreSQL::Test::Utils::tempdir_short();
$node->safe_psql('hub2', "CREATE TABLESPACE she_ts LOCATION '$tsdir'");
($ret, $out, $err) = $node->psql('hub2', 'ALTER DATABASE postgres SET TABLESPACE she_ts');
is($ret, 0, 'so does ALTER DATABASE ... SET TABLESPACE') or diag($err);
ok(wait_worker(), 'and the worker comes back');
my @stops = (log_since($offset) =~ /worker for database "postgres" stopping on request/g);
is(scalar @stops, 2, 'it stepped aside once for each command');
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.l.after_tablespace')});
is(subject_count('org.t.l.after_tablespace', 1), 1, 'and publishes');

# --- the launcher dies: its successor stops the orphaned worker and starts
# its own, so there is never more than one worker
my $launcher = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'state_hub_events launcher'});
my $orphan = status('worker_pid');
kill 'TERM', $launcher;
$node->poll_query_until('postgres', qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'state_hub_events launcher' AND pid <> $launcher});
$node->poll_query_until('postgres', qq{SELECT worker_pid IS NOT NULL AND worker_pid <> $orphan FROM state_hub_events.worker_status()});
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'state_hub_events worker'}),
    '1', 'after the launcher restarted, one worker runs: a new one');
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.l.after_launcher')});
is(subject_count('org.t.l.after_launcher', 1), 1, 'and it publishes');

# --- DROP EXTENSION with a backlog is refused; discarding on purpose works
$nats->stop;
$offset = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT count(state_hub_events.publish('org.t.l.discarded')) FROM generate_series(1, 5)});
($ret, $out, $err) = $node->psql('postgres', 'DROP EXTENSION state_hub_events');
isnt($ret, 0, 'DROP EXTENSION is refused while the outbox holds events');
like($err, qr/it holds 5 committed events not yet published/, 'with the count');
is($node->safe_psql('postgres', 'SELECT count(*) FROM state_hub_events.outbox'), '5', 'nothing was lost');
$node->safe_psql('postgres', 'TRUNCATE state_hub_events.outbox');
($ret, $out, $err) = $node->psql('postgres', 'DROP EXTENSION state_hub_events');
is($ret, 0, 'after TRUNCATE the extension drops');
sleep 2;    # an observation window: the worker must log no error in it
unlike(log_since($offset), qr/ERROR:  (?!cannot drop)|FATAL/, 'the worker idles without errors while the extension is absent');

# --- ALTER EXTENSION UPDATE from 1.0 with a backlog: it is kept and drains
$node->safe_psql('postgres', q{CREATE EXTENSION state_hub_events VERSION '1.0'});
$node->safe_psql('postgres', q{SELECT count(state_hub_events.publish('org.t.l.update', jsonb_build_object('i', i))) FROM generate_series(1, 10) i});
$node->safe_psql('postgres', 'ALTER EXTENSION state_hub_events UPDATE');
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'state_hub_events'}), '1.3', 'updated to 1.3');
is($node->safe_psql('postgres', 'SELECT events FROM state_hub_events.backlog()'), '10', 'the backlog survived the update');
$nats->start;
my @m = $nats->wait_for_messages(10, subject => 'org.t.l.update', timeout => 60);
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1 .. 10 ], 'and drained in order after the update');
is(subject_now('org.t.l.discarded'), 0, 'the discarded events never left');

$node->stop;
$nats->stop;
done_testing();
