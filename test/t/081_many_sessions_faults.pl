
# 081_many_sessions_faults.pl
#    Many concurrent sessions under faults, checked event by event.
#
#    Immediate mode: 60 psql sessions commit a known mix of transactions
#    (one event, several, a rolled-back savepoint, ROLLBACK, a poison event
#    the stream refuses (a subject the publisher may not publish to, or over
#    the stream's max_msg_size) among others, a few larger than queue_size)
#    on 8 hot rows, in 7 phases of 3 transactions per session.  Before each
#    phase every session waits at a gate (an advisory lock the test holds),
#    so each fault lasts a known number of transactions:
#      0 no fault; 1 NATS hung (SIGSTOP), sessions waiting in COMMIT
#      cancelled and terminated; 2 the publisher exits (SIGTERM) while
#      sessions wait in COMMIT for a hung NATS, and restarts; 3 NATS killed
#      (kill -9) while sessions wait in COMMIT for it; 4 NATS back; 5 NATS
#      hung, wait_for_ack off too; 6 NATS flaps (hangs shorter than
#      publish_timeout).  In phases 1 and 3 every session waits for
#      acknowledgements; otherwise half of them do.
#    Afterwards: nothing of a rolled-back transaction or savepoint, and no
#    poison event, is in the stream; no message is stored twice; per
#    phase, every committed event has exactly one outcome in stats()
#    (published + duplicates + failed + unconfirmed = events committed), the
#    stream holds at least the published ones and none counted failed; an
#    event a WARNING called lost is not in the stream and is counted
#    failed; for a session waiting for acknowledgements every event the
#    stream lacks was in its COMMIT's WARNING; without a fault only the
#    poison fails, each counted lost by its COMMIT's WARNING; per hot row
#    the events are in commit order; no COMMIT waited beyond its bound.
#    Then kill -9 of the publisher while sessions commit: nothing
#    uncommitted or twice in the stream, commit order per hot row.
#
#    Durable mode: the same load while the worker is killed with kill -9
#    (the postmaster restarts the cluster), NATS is stopped and PostgreSQL
#    crashes (immediate shutdown): every committed event is in the stream
#    exactly once by Nats-Msg-Id, per hot row in commit order, or, if
#    poison, in the dead-letter table (which holds nothing else).
#
#    SHE_STRESS_SESSIONS (60) and SHE_STRESS_TXNS (3 per phase) scale it.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use NatsServer;
use SheTest;

my $hot_rows = 8;

# The schema every node gets: hot rows, a record of each committed
# transaction (the truth about what committed, whatever the client saw),
# and functions that publish a known set of events.
my $schema = qq{
CREATE TABLE hot (k int PRIMARY KEY, v int NOT NULL);
INSERT INTO hot SELECT g, 0 FROM generate_series(0, $hot_rows - 1) g;
CREATE TABLE done (s int, t int, n int, k int, v int, poison int, PRIMARY KEY (s, t));
-- poison: the second event is one the stream refuses (1: a subject the
-- publisher may not publish to, 2: over the stream's max_msg_size)
CREATE FUNCTION bump(s int, t int, k int, n int, pad int, poison int DEFAULT 0) RETURNS int
LANGUAGE plpgsql AS \$\$
DECLARE nv int;
BEGIN
    UPDATE hot SET v = hot.v + 1 WHERE hot.k = bump.k RETURNING hot.v INTO nv;
    FOR e IN 1 .. n LOOP
        PERFORM state_hub_events.publish(CASE WHEN poison = 1 AND e = 2 THEN 'org.s.deny' ELSE 'org.s.ev' END,
            jsonb_build_object('s', s, 't', t, 'k', k, 'v', nv, 'e', e,
                'p', repeat('x', CASE WHEN poison = 2 AND e = 2 THEN 7000 ELSE pad END)));
    END LOOP;
    INSERT INTO done VALUES (s, t, n, k, nv, poison);
    RETURN nv;
END \$\$;
CREATE FUNCTION junk(s int, t int, n int) RETURNS void
LANGUAGE plpgsql AS \$\$
BEGIN
    FOR e IN 1 .. n LOOP
        PERFORM state_hub_events.publish('org.s.rb', jsonb_build_object('s', s, 't', t, 'e', e));
    END LOOP;
END \$\$;
};

# The transactions of session $s: a deterministic mix, in phases of
# $per_phase transactions.  Before phase p (p >= 1) the session passes a
# gate: the advisory lock p, which the test holds until it has set up that
# phase's fault, so each fault lasts a known number of transactions.  Each
# transaction is preceded by a marker on stderr, so the WARNINGs that
# follow belong to it.
my $phases = 7;
# phases in which every session waits for acknowledgements (in the others
# even sessions do, odd ones do not)
my %ack_phase = (1 => 1, 3 => 1);
my $per_phase = $ENV{SHE_STRESS_TXNS} // 3;

sub session_script
{
    my ($node, $s, %opt) = @_;
    my $sql = "\\set ON_ERROR_STOP 0\n";
    for my $p (0 .. $phases - 1)
    {
        $sql .= "\\warn G $p\nSELECT pg_advisory_lock_shared($p); SELECT pg_advisory_unlock_shared($p);\n" if $p;
        $sql .= "SET state_hub_events.wait_for_ack = "
          . ($opt{ack} || $ack_phase{$p} ? 'on' : 'off') . ";\n";
        for my $j (1 .. $per_phase)
        {
            my $t = $p * $per_phase + $j;
            my $k = ($s * 3 + $t) % $hot_rows;
            my $kind = ($s * 7 + $t) % 10;
            $sql .= "\\warn M $s $t\n";
            if ($opt{large} && $j == 1 && ($p == 1 || $p == 4))
            {
                # larger than queue_size (256 kB): streamed in chunks
                $sql .= "BEGIN; SELECT bump($s, $t, $k, 150, 1800); COMMIT;\n";
            }
            elsif ($kind <= 3 || $kind == 9)
            {
                $sql .= "SELECT bump($s, $t, $k, 1, 10);\n";    # autocommit
            }
            elsif ($kind <= 5)
            {
                $sql .= "BEGIN; SELECT bump($s, $t, $k, 5, 100); COMMIT;\n";
            }
            elsif ($kind == 8)
            {
                # a poison event among three
                $sql .= "BEGIN; SELECT bump($s, $t, $k, 3, 100, " . (1 + $s % 2) . "); COMMIT;\n";
            }
            elsif ($kind == 6)
            {
                # the first junk event commits; the savepoints' do not
                $sql .= "BEGIN; SELECT junk($s, $t, 1); SAVEPOINT a; SELECT junk($s, $t, 3); "
                  . "ROLLBACK TO a; SELECT bump($s, $t, $k, 2, 10); SAVEPOINT b; SELECT junk($s, $t, 2); "
                  . "ROLLBACK TO b; COMMIT;\n";
            }
            else
            {
                $sql .= "BEGIN; SELECT bump($s, $t, $k, 2, 10); SELECT junk($s, $t, 2); ROLLBACK;\n";
            }
        }
    }
    $sql .= "\\warn END\n";
    my $file = $node->basedir . "/s$s.sql";
    open my $fh, '>', $file or die $!;
    print $fh $sql;
    close $fh;
    return $file;
}

# The test's own session holds the gates 1 .. $phases - 1.
sub close_gates
{
    my ($node) = @_;
    my $bg = $node->background_psql('postgres', on_error_stop => 0);
    $bg->query_safe(join('; ', map { "SELECT pg_advisory_lock($_)" } 1 .. $phases - 1));
    return $bg;
}

# Wait (bounded) until every session still connected waits at gate $p.
sub wait_gate
{
    my ($node, $p, $timeout) = @_;
    return wait_until("the sessions at gate $p", $timeout // 60, sub {
        my $r = $node->safe_psql('postgres', qq{
            SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $p AND NOT granted)
                 = (SELECT count(*) FROM pg_stat_activity WHERE application_name ~ '^s[0-9]+\$')});
        $r eq 't' });
}

sub open_gate
{
    my ($bg, $p) = @_;
    $bg->query_safe("SELECT pg_advisory_unlock($p)");
}

# Start the sessions; returns a list of [s, harness, stderr file].
sub start_sessions
{
    my ($node, $first, $n, %opt) = @_;
    my @sess;
    for my $s ($first .. $first + $n - 1)
    {
        my $ack = $opt{ack_all} || $s % 2 == 0;
        my $file = session_script($node, $s, ack => $ack,
            large => ($opt{large} && $s % 20 == 3));
        my $err = $node->basedir . "/s$s.err";
        local $ENV{PGAPPNAME} = "s$s";
        my $h = IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-f', $file ],
            '>', '/dev/null', '2>', $err);
        push @sess, { s => $s, h => $h, err => $err, ack => $ack };
    }
    return @sess;
}

sub committed_txns
{
    my ($node) = @_;
    my ($r, $o, $e) = $node->psql('postgres', 'SELECT count(*) FROM done');
    return $r == 0 ? $o : -1;
}

# Wait (bounded) until $n more transactions committed than $from, asking
# on one connection without a pause, so that a fault set off afterwards
# hits the sessions while they commit.
sub wait_commits
{
    my ($node, $what, $from, $n, $timeout) = @_;
    my $bg = $node->background_psql('postgres');
    my $deadline = time + ($timeout // 30);
    my $c = -1;
    while (time < $deadline)
    {
        $c = $bg->query_safe('SELECT count(*) FROM done');
        last if $c >= $from + $n;
    }
    $bg->quit;
    diag("timed out waiting for $what: $n more commits than $from ($c)") if $c < $from + $n;
    return $c >= $from + $n;
}

# Wait (bounded) until $n sessions are inside COMMIT, asking on one
# connection without a pause.
sub wait_in_commit
{
    my ($node, $n) = @_;
    my $bg = $node->background_psql('postgres');
    my $deadline = time + 30;
    my $c = 0;
    while (time < $deadline)
    {
        $c = $bg->query_safe(q{SELECT count(*) FROM pg_stat_activity
            WHERE application_name ~ '^s[0-9]+$' AND state = 'active' AND query ~ '^COMMIT'});
        last if $c >= $n;
    }
    $bg->quit;
    return $c >= $n;
}

sub finish_sessions
{
    my ($timeout, @sess) = @_;
    my $deadline = time + $timeout;
    for my $x (@sess)
    {
        while ($x->{h}->pumpable && time < $deadline)
        {
            eval { $x->{h}->pump_nb };
            last unless $x->{h}->pumpable;
            usleep(20_000);
        }
        if ($x->{h}->pumpable)
        {
            $x->{h}->kill_kill;
            fail("session $x->{s} finished within $timeout s");
            next;
        }
        eval { $x->{h}->finish };
    }
}

# WARNINGs per transaction: {"s t" => [lost, unconfirmed, cancelled,
# terminated]}; terminated: the connection was lost in it
sub parse_warnings
{
    my (@sess) = @_;
    my %w;
    for my $x (@sess)
    {
        my $cur;
        for my $line (split /\n/, slurp_file($x->{err}))
        {
            if ($line =~ /^M (\d+) (\d+)$/) { $cur = "$1 $2"; next; }
            next unless defined $cur;
            $w{$cur} //= [ 0, 0, 0 ];
            $w{$cur}[0] += $1 if $line =~ /WARNING:  state_hub_events: (\d+) of \d+ events of the committed transaction were not published/;
            $w{$cur}[1] += $1 if $line =~ /WARNING:  state_hub_events: (\d+) of \d+ events were sent but not confirmed/;
            $w{$cur}[2] = 1 if $line =~ /cancel/i;
            $w{$cur}[3] = 1 if $line =~ /server closed the connection|terminating connection/;
        }
    }
    return \%w;
}

# Per hot row, stream order must follow v (the row's version: commit
# order of the transactions that updated it), and e within a transaction.
sub check_order
{
    my ($what, @msgs) = @_;
    my %last;
    my @bad;
    for my $m (@msgs)
    {
        my $a = $m->{body}{attributes};
        my $cur = [ $a->{v}, $a->{e} ];
        my $prev = $last{ $a->{k} };
        push @bad, "row $a->{k}: v $a->{v} e $a->{e} (seq $m->{seq}) after v $prev->[0] e $prev->[1]"
          if $prev && ($cur->[0] < $prev->[0] || ($cur->[0] == $prev->[0] && $cur->[1] <= $prev->[1]));
        $last{ $a->{k} } = $cur;
    }
    is_deeply([ @bad[ 0 .. ($#bad < 4 ? $#bad : 4) ] ], [], "$what: per hot row, events in commit order ("
          . scalar(@bad) . ' inversions)');
}

# The pid of the postmaster's child whose title names $type (the
# publisher has no entry in pg_stat_activity: it does not connect to a
# database).
sub pid_of
{
    my ($node, $type) = @_;
    my $pm = $node->{_pid} or return undef;
    for my $stat (glob('/proc/[0-9]*/stat'))
    {
        my ($pid, $ppid) = (eval { slurp_file($stat) } // '') =~ /^(\d+) \(.*\) \S+ (\d+)/ or next;
        next unless $ppid == $pm;
        my $cmd = eval { slurp_file("/proc/$pid/cmdline") } // '';
        return $pid if $cmd =~ /^postgres: [^:]*\Q$type\E/ || $cmd =~ /\Q$type\E/;
    }
    return undef;
}

# ---------------------------------------------------------------------
# Immediate mode
# ---------------------------------------------------------------------
my $nsess = $ENV{SHE_STRESS_SESSIONS} // 60;

# the publisher connects as "hub", which may not publish to org.s.deny;
# the test tools connect as "admin"
my $nats = NatsServer->new(user => 'admin', password => 'adminpw', auth_conf => q{
authorization {
  users = [
    { user: admin, password: adminpw }
    { user: hub, password: hubpw, permissions: { publish: { deny: ["org.s.deny"] } } }
  ]
}
})->start;
my $hub_url = 'nats://hub:hubpw@127.0.0.1:' . $nats->port;
my $node = she_node('many', $nats, conf => qq{
state_hub_events.nats_url = '$hub_url'
max_connections = @{[ $nsess + 20 ]}
state_hub_events.queue_size = '256kB'
state_hub_events.publish_timeout = '1s'
state_hub_events.connect_timeout = '1s'
state_hub_events.retry_interval = '1s'
log_min_duration_statement = 4000
});
$node->safe_psql('postgres', $schema);
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.setup')});
$nats->wait_for_count(1, timeout => 30);
# an event over 6,000 bytes is refused by the stream, not at the call
$nats->update_stream('ACTIVITY_EVENTS', 'max_msg_size=6000');
$node->safe_psql('postgres', 'SELECT state_hub_events.stats_reset()');
my $log_off = -s $node->logfile;

# Events committed so far (a kind-6 transaction commits one junk event too).
my $events_sql = q{SELECT coalesce(sum(n + CASE WHEN n = 2 AND (s * 7 + t) % 10 = 6 THEN 1 ELSE 0 END), 0) FROM done};
my @stat_cols = qw(published duplicates failed unconfirmed dropped);
my @probe;    # per phase: events, lost, unc (WARNINGs), present (stream)

# Once every committed event has its outcome in stats() (bounded wait),
# the counters and the events committed.
sub settle
{
    my ($what) = @_;
    my %st;
    wait_until("stats() to account for every committed event ($what)", 30, sub {
        my ($ev, @v) = split /\|/, $node->safe_psql('postgres',
            "SELECT ($events_sql), " . join(', ', @stat_cols) . ' FROM state_hub_events.stats()');
        @st{@stat_cols} = @v;
        $st{events} = $ev;
        $st{events} += $_->{events} // 0 for grep { defined } @probe;
        $st{published} + $st{duplicates} + $st{failed} + $st{unconfirmed} >= $ev });
    return \%st;
}

# probe($p): before phase $p, publish one event at a time (wait_for_ack
# on) until one is published without a WARNING: the publisher publishes
# again (reconnected, out of its back-off).  The probes count in phase $p.
sub probe
{
    my ($p) = @_;
    return wait_until("the publisher to publish again before phase $p", 30, sub {
        my ($r, $o, $e) = $node->psql('postgres',
            "SET state_hub_events.wait_for_ack = on; SELECT state_hub_events.publish('org.s.probe', '{\"ph\": $p}')");
        $probe[$p]{events}++ if $r == 0;
        $probe[$p]{lost} += $1 if $e =~ /(\d+) of \d+ events of the committed transaction were not published/;
        $probe[$p]{unc} += $1 if $e =~ /(\d+) of \d+ events were sent but not confirmed/;
        $r == 0 && $e eq '' });
}

my $gates = close_gates($node);
my @sess = start_sessions($node, 0, $nsess, large => 1);
my $total = $nsess * $phases * $per_phase;
my @snap = ({ map { $_ => 0 } @stat_cols, 'events' });
my @notes;

# phase 0: no fault
ok(wait_gate($node, 1), 'phase 0 (no fault) ran');
push @snap, settle('phase 0');

# phase 1: NATS hangs; sessions waiting in COMMIT are cancelled
$nats->pause;
open_gate($gates, 1);
my $ncancel = 0;
wait_until('3 sessions in COMMIT while NATS hangs', 20, sub {
    $ncancel += $node->safe_psql('postgres', q{SELECT count(*) FILTER (WHERE pg_cancel_backend(pid))
        FROM pg_stat_activity WHERE application_name ~ '^s[0-9]+$' AND state = 'active' AND query ~ '^COMMIT'});
    $ncancel >= 3 });
push @notes, "cancelled $ncancel sessions in COMMIT";
# and sessions waiting in COMMIT are terminated
my $nterm = 0;
wait_until('2 sessions in COMMIT to terminate while NATS hangs', 20, sub {
    $nterm += $node->safe_psql('postgres', q{SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
        FROM pg_stat_activity WHERE application_name ~ '^s[0-9]+$' AND state = 'active' AND query ~ '^COMMIT'});
    $nterm >= 2 });
push @notes, "terminated $nterm sessions in COMMIT";
ok(wait_gate($node, 2), 'phase 1 (NATS hung, cancels) ran');
push @snap, settle('phase 1');
$nats->resume;

# phase 2: the publisher exits (SIGTERM) while it holds events sent to a
# hung NATS and sessions wait for them in COMMIT; the postmaster starts it
# again; NATS answers again
ok(probe(2), 'publishing resumed after NATS hung');
my $ppid = pid_of($node, 'state_hub_events publisher');
ok($ppid, 'the publisher runs');
$nats->pause;
open_gate($gates, 2);
ok(wait_in_commit($node, 3), 'phase 2: sessions wait in COMMIT for a hung NATS');
kill 'TERM', $ppid if $ppid;
ok(wait_until('a new publisher', 30, sub { my $p = pid_of($node, 'state_hub_events publisher'); $p && $p != $ppid }),
    'the publisher was started again');
$nats->resume;
ok(wait_gate($node, 3), 'phase 2 (publisher restarted) ran');
push @snap, settle('phase 2');

# phase 3: NATS dies (kill -9) while it holds events it has not
# acknowledged and sessions wait for them in COMMIT
ok(probe(3), 'the restarted publisher publishes');
$nats->pause;
open_gate($gates, 3);
ok(wait_in_commit($node, 3), 'phase 3: sessions wait in COMMIT for a hung NATS');
$nats->kill9;
$nats->{paused} = 0;
ok(wait_gate($node, 4), 'phase 3 (NATS killed) ran');
push @snap, settle('phase 3');

# phase 4: NATS is back
$nats->start;
ok(probe(4), 'publishing resumed after NATS came back');
open_gate($gates, 4);
ok(wait_gate($node, 5), 'phase 4 (NATS back) ran');
push @snap, settle('phase 4');

# phase 5: NATS hangs, sessions with wait_for_ack off too
$nats->pause;
open_gate($gates, 5);
ok(wait_gate($node, 6), 'phase 5 (NATS hung) ran');
push @snap, settle('phase 5');
$nats->resume;

# phase 6: NATS flaps: it hangs until a session has waited for the
# publisher (wait event Extension) for 0.3, 0.6 or 0.9 s of its
# publish_timeout of 1 s (acknowledgements then arrive before or about when
# the session gives up), answers for 10 commits, hangs again
ok(probe(6), 'publishing resumed after NATS hung again');
my $flaps = 0;
my $poll = $node->background_psql('postgres');
my $sessions_sql = q{SELECT count(*) FROM pg_stat_activity WHERE application_name ~ '^s[0-9]+$'};
my $flap_deadline = time + 60;
# exploration: SHE_STRESS_FLAP=restart or kill restarts NATS (SIGTERM or
# kill -9) as soon as a session waits for the publisher, instead
my $restart = $ENV{SHE_STRESS_FLAP} // '';
$nats->pause unless $restart;
open_gate($gates, 6);
while ($restart && time < $flap_deadline && $poll->query_safe($sessions_sql) > 0)
{
    $flaps++;
    my $wait_deadline = time + 5;
    while (time < $wait_deadline)
    {
        last if $poll->query_safe(q{SELECT count(*) FROM pg_stat_activity
            WHERE application_name ~ '^s[0-9]+$' AND wait_event_type = 'Extension'}) > 0;
    }
    if ($restart eq 'kill') { $nats->kill9; } else { $nats->stop; }
    $nats->start;
    ok(probe(6), "publishing resumed after NATS restart $flaps");
    my $c = $poll->query_safe('SELECT count(*) FROM done');
    my $run_deadline = time + 5;
    while (time < $run_deadline)
    {
        last if $poll->query_safe('SELECT count(*) FROM done') >= $c + 10;
        last if $poll->query_safe($sessions_sql) == 0;
    }
}
while (!$restart && time < $flap_deadline && $poll->query_safe($sessions_sql) > 0)
{
    $nats->pause unless $nats->{paused};
    $flaps++;
    my %since;
    my $hang_for = (0.3, 0.6, 0.9)[ $flaps % 3 ];
    my $hang_deadline = time + 5;
    while (time < $hang_deadline)
    {
        my $now = time;
        my %waiting = map { $_ => 1 } split /\n/, $poll->query_safe(q{SELECT pid FROM pg_stat_activity
            WHERE application_name ~ '^s[0-9]+$' AND wait_event_type = 'Extension'});
        %since = map { $_ => $since{$_} // $now } keys %waiting;
        last if grep { $now - $_ >= $hang_for } values %since;
        last if $poll->query_safe($sessions_sql) == 0;
    }
    diag("flap $flaps: " . $poll->query_safe(q{SELECT string_agg(DISTINCT coalesce(wait_event_type, '-') || ':' || coalesce(wait_event, '-') || ':' || state || ':' || left(query, 12), ', ') FROM pg_stat_activity WHERE application_name ~ '^s[0-9]+$'})) if $ENV{SHE_STRESS_DEBUG};
    $nats->resume;
    my $c = $poll->query_safe('SELECT count(*) FROM done');
    my $run_deadline = time + 5;
    while (time < $run_deadline)
    {
        last if $poll->query_safe('SELECT count(*) FROM done') >= $c + 10;
        last if $poll->query_safe($sessions_sql) == 0;
    }
}
$poll->quit;
push @notes, "NATS flapped $flaps times";
finish_sessions(90, @sess);
push @snap, settle('phase 6');
$gates->quit;
note(join('; ', @notes));

my %done;
for (split /\n/, $node->safe_psql('postgres', q{SELECT s, t, n, k, v, poison FROM done}))
{
    my ($s, $t, $n, $k, $v, $poison) = split /\|/;
    # a kind-6 transaction also commits the junk event before its savepoints
    $done{"$s $t"} = { n => $n, k => $k, v => $v, poison => $poison,
        junk => ($n == 2 && ($s * 7 + $t) % 10 == 6 ? 1 : 0) };
}
my $committed_events = $snap[-1]{events};    # with the probes
note(scalar(keys %done) . " transactions committed $committed_events events");
cmp_ok(scalar(keys %done), '>', $total / 2, 'most transactions committed');

my %fin = %{ $snap[-1] };
note("stats: " . join(', ', map { "$_ $fin{$_}" } @stat_cols));
is($fin{published} + $fin{duplicates} + $fin{failed} + $fin{unconfirmed}, $committed_events,
    'stats(): published + duplicates + failed + unconfirmed = events committed');
is($fin{dropped}, 0, 'stats(): nothing dropped');

# the stream
my $stored = $nats->count(undef, subject => 'org.s.>');
my @msgs = $nats->messages(undef, undef, subject => 'org.s.>', timeout => 60);
my (%by_id, %per_txn, @stray);
for my $m (@msgs)
{
    $by_id{ $m->{msg_id} }++;
    my $a = $m->{body}{attributes};
    my $key = "$a->{s} $a->{t}";
    if ($m->{subject} eq 'org.s.probe')
    {
        $probe[ $a->{ph} ]{present}++;
        next;
    }
    if ($m->{subject} eq 'org.s.rb')
    {
        if ($done{$key} && $a->{e} == 1 && $done{$key}{junk}) { $per_txn{$key}{j}++; }
        else { push @stray, "junk $key e $a->{e}"; }
        next;
    }
    push @stray, "event of uncommitted $key" unless $done{$key};
    push @stray, "event of $key with v $a->{v}, committed $done{$key}{v}" if $done{$key} && $done{$key}{v} != $a->{v};
    push @stray, "poison $m->{subject} of $key e $a->{e}" if $m->{subject} ne 'org.s.ev' || length($a->{p}) > 6000;
    $per_txn{$key}{ $a->{e} }++;
}
is_deeply(\@stray, [], 'nothing of a rolled-back transaction or savepoint, no event the stream refuses, is in the stream');
is(scalar(grep { $by_id{$_} > 1 } keys %by_id), 0, 'no message is stored twice');

# per transaction, against its session's WARNINGs; per phase, against the
# counters
my $w = parse_warnings(@sess);
my (@unreported, @lost_stored, @ph, @clean);
# the phases without a fault: every event is published but the poison,
# which its COMMIT's WARNING counts lost (wait_for_ack on)
my %clean_phase = (0 => 1, 4 => 1);
my %ack = map { $_->{s} => $_->{ack} } @sess;
for my $key (sort keys %done)
{
    my ($s, $t) = split / /, $key;
    my $p = int(($t - 1) / $per_phase);
    my $n = $done{$key}{n} + $done{$key}{junk};
    my $present = scalar keys %{ $per_txn{$key} // {} };
    my ($lost, $unc, undef, $term) = @{ $w->{$key} // [ 0, 0 ] };
    # A terminated session's COMMIT WARNING reaches the client before its
    # connection closes (test 082), so it is checked like any other.
    note("terminated $key: $present of $n events stored, WARNING: $lost lost, $unc unconfirmed")
      if $term;
    $ph[$p]{events} += $n;
    $ph[$p]{present} += $present;
    $ph[$p]{lost} += $lost;
    $ph[$p]{unc} += $unc;
    $ph[$p]{poison} += 1 if $done{$key}{poison};
    my $want_lost = $done{$key}{poison} ? 1 : 0;
    push @clean, "phase $p $key (poison $done{$key}{poison}): $present of $n stored, WARNING: $lost lost, $unc unconfirmed"
      if $clean_phase{$p} && ($present != $n - $want_lost || $unc
        || (($ack{$s} || $ack_phase{$p}) ? $lost != $want_lost : $lost));
    push @lost_stored, "$key: $present of $n stored, WARNING said $lost lost" if $present > $n - $lost;
    push @unreported, "$key: $present of $n stored, WARNING: $lost lost, $unc unconfirmed"
      if ($ack{$s} || $ack_phase{$p}) && $n - $present > $lost + $unc;
}
is_deeply([ @lost_stored[ 0 .. ($#lost_stored < 4 ? $#lost_stored : 4) ] ], [],
    'no event a WARNING called lost is in the stream (' . scalar(@lost_stored) . ')');
is_deeply([ @unreported[ 0 .. ($#unreported < 4 ? $#unreported : 4) ] ], [],
    'wait_for_ack on: every event the stream lacks was in its COMMIT\'s WARNING (' . scalar(@unreported) . ')');
is_deeply([ @clean[ 0 .. ($#clean < 4 ? $#clean : 4) ] ], [],
    'without a fault every event is stored but the poison, which its WARNING counts lost (' . scalar(@clean) . ')');
for my $p (0 .. $phases - 1)
{
    $ph[$p]{$_} += $probe[$p]{$_} // 0 for qw(events present lost unc);
    my %d = map { $_ => $snap[ $p + 1 ]{$_} - $snap[$p]{$_} } @stat_cols, 'events';
    my $x = $ph[$p];
    note("phase $p: $x->{events} events, $x->{present} stored; stats published $d{published}, duplicates $d{duplicates}, "
          . "failed $d{failed}, unconfirmed $d{unconfirmed}; WARNINGs $x->{lost} lost, $x->{unc} unconfirmed");
    is($d{events}, $x->{events}, "phase $p: events committed");
    is($d{published} + $d{duplicates} + $d{failed} + $d{unconfirmed}, $x->{events}, "phase $p: one outcome per event in stats()");
    cmp_ok($x->{present}, '>=', $d{published}, "phase $p: every event counted published is in the stream");
    cmp_ok($x->{present}, '<=', $d{published} + $d{duplicates} + $d{unconfirmed},
        "phase $p: the stream holds no event counted failed");
    cmp_ok($x->{lost}, '<=', $d{failed}, "phase $p: every event a WARNING called lost is counted failed");
    if ($clean_phase{$p})
    {
        is("$d{failed} $d{unconfirmed}", (($x->{poison} // 0) + ($probe[$p]{lost} // 0)) . ' 0',
            "phase $p (no fault): only the poison (and probes while NATS was coming back) failed");
    }
    next unless $ack_phase{$p};
    cmp_ok($d{failed}, '<=', $x->{lost} + $x->{unc}, "phase $p (all wait for acks): every event counted failed was in a WARNING");
    cmp_ok($d{unconfirmed}, '<=', $x->{unc}, "phase $p (all wait for acks): every event counted unconfirmed was in a WARNING");
}

check_order('immediate', grep { $_->{subject} eq 'org.s.ev' } @msgs);

my $log = slurp_file($node->logfile, $log_off);
my @slow = $log =~ /duration: (\d+\.\d+ ms  statement: COMMIT)/g;
is_deeply(\@slow, [], 'no COMMIT took longer than 4 s (connect_timeout + publish_timeout 2 s)');
unlike($log, qr/PANIC|terminated by signal/, 'no crash');

# kill -9 of the publisher while sessions commit (half of them wait in
# COMMIT): the postmaster restarts the cluster, the sessions die, the
# queue and the counters start again.  The stream still holds nothing of
# a transaction that did not commit, nothing twice, and per hot row the
# commit order.
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
$node->reload;
$gates = close_gates($node);
my @wave = start_sessions($node, 500, $nsess / 2);
ok(wait_gate($node, 1), 'kill -9 wave: phase 0 ran');
$ppid = pid_of($node, 'state_hub_events publisher');
ok($ppid, 'the publisher runs');
$nats->pause;
open_gate($gates, 1);
ok(wait_in_commit($node, 3), 'kill -9 wave: sessions wait in COMMIT for a hung NATS');
kill 'KILL', $ppid if $ppid;
$nats->resume;
finish_sessions(60, @wave);
eval { $gates->quit };
ok(wait_until('PostgreSQL back after the publisher was killed', 60, sub { committed_txns($node) >= 0 }),
    'PostgreSQL restarted after kill -9 of the publisher');
my %kdone = map { my ($s, $t) = split /\|/; ("$s $t" => 1) } split /\n/,
  $node->safe_psql('postgres', 'SELECT s, t FROM done WHERE s >= 500');
my (%kseen, @kbad);
my @kmsgs = grep { ($_->{body}{attributes}{s} // -1) >= 500 }
  $nats->messages(undef, undef, subject => 'org.s.>', timeout => 60);
for my $m (@kmsgs)
{
    my $a = $m->{body}{attributes};
    push @kbad, "twice: $m->{msg_id}" if $kseen{ $m->{msg_id} }++;
    push @kbad, "uncommitted $a->{s} $a->{t}" unless $kdone{"$a->{s} $a->{t}"};
}
note(scalar(keys %kdone) . ' transactions committed in the kill -9 wave, ' . scalar(@kmsgs) . ' events stored');
is_deeply(\@kbad, [], 'kill -9 of the publisher: nothing uncommitted, nothing twice in the stream');
check_order('kill -9 of the publisher', grep { $_->{subject} eq 'org.s.ev' } @kmsgs);
$node->stop;

# ---------------------------------------------------------------------
# Durable mode
# ---------------------------------------------------------------------
my $dnode = she_node('many_durable', $nats, conf => qq{
state_hub_events.nats_url = '$hub_url'
max_connections = @{[ $nsess + 20 ]}
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.publish_timeout = '1s'
state_hub_events.retry_interval = '300ms'
restart_after_crash = on
});
$dnode->safe_psql('postgres', $schema);
my $dsess = int($nsess / 2);
my @dall;

# wave 1: kill -9 of the worker in phase 1 (the postmaster restarts the
# cluster, the sessions die)
my $dgates = close_gates($dnode);
@wave = start_sessions($dnode, 1000, $dsess, ack_all => 1);
push @dall, @wave;
ok(wait_gate($dnode, 1), 'durable wave 1: phase 0 ran');
my $wpid = pid_of($dnode, 'state_hub_events worker');
ok($wpid, 'the durable worker runs');
# the worker has sent events a hung NATS has not acknowledged when it is
# killed; NATS stores them once it answers again, and the next worker
# sends them again (collapsed by Nats-Msg-Id)
my $c0 = committed_txns($dnode);
$nats->pause;
open_gate($dgates, 1);
wait_commits($dnode, 'durable wave 1', $c0, 20);
cmp_ok($dnode->safe_psql('postgres', 'SELECT events FROM state_hub_events.backlog()'), '>', 0,
    'events wait in the outbox for a hung NATS');
kill 'KILL', $wpid if $wpid;
$nats->resume;
finish_sessions(60, @wave);
eval { $dgates->quit };
ok(wait_until('PostgreSQL back after the worker was killed', 60, sub { committed_txns($dnode) >= 0 }),
    'PostgreSQL restarted after kill -9 of the worker');

# wave 2: NATS stops in phase 1, PostgreSQL crashes (immediate shutdown) in
# phase 2
$dgates = close_gates($dnode);
@wave = start_sessions($dnode, 2000, $dsess, ack_all => 1);
push @dall, @wave;
ok(wait_gate($dnode, 1), 'durable wave 2: phase 0 ran');
$nats->stop;
open_gate($dgates, 1);
ok(wait_gate($dnode, 2), 'durable wave 2: phase 1 (NATS down) ran');
$c0 = committed_txns($dnode);
open_gate($dgates, 2);
wait_commits($dnode, 'durable wave 2', $c0, 20);
$dnode->stop('immediate');
finish_sessions(60, @wave);
eval { $dgates->quit };
$dnode->start;
$nats->start;

# wave 3: no fault, to its end
$dgates = close_gates($dnode);
@wave = start_sessions($dnode, 3000, $dsess, ack_all => 1);
push @dall, @wave;
for my $p (1 .. $phases - 1)
{
    ok(wait_gate($dnode, $p), "durable wave 3: phase @{[ $p - 1 ]} ran");
    open_gate($dgates, $p);
}
finish_sessions(90, @wave);
$dgates->quit;

%done = ();
for (split /\n/, $dnode->safe_psql('postgres', q{SELECT s, t, n, k, v, poison FROM done}))
{
    my ($s, $t, $n, $k, $v, $poison) = split /\|/;
    $done{"$s $t"} = { n => $n, k => $k, v => $v, poison => $poison,
        junk => ($n == 2 && ($s * 7 + $t) % 10 == 6 ? 1 : 0) };
}
my $events = 0;
$events += $_->{n} + $_->{junk} for values %done;
note(scalar(keys %done) . " durable transactions committed $events events");
ok(wait_until('the outbox to drain', 60,
    sub { $dnode->safe_psql('postgres', 'SELECT events FROM state_hub_events.backlog()') == 0 }),
    'durable: the outbox drains');
# the durable sessions are numbered from 1000
@msgs = grep { $_->{body}{attributes}{s} >= 1000 } $nats->messages(undef, undef, subject => 'org.s.>', timeout => 60);
my (%seen, @dup, @bad, %present);
for my $m (@msgs)
{
    push @dup, $m->{msg_id} if $seen{ $m->{msg_id} }++;
    my $a = $m->{body}{attributes};
    my $key = "$a->{s} $a->{t}";
    if ($m->{subject} eq 'org.s.rb')
    {
        push @bad, "junk $key e $a->{e}" unless $done{$key} && $a->{e} == 1 && ($a->{s} * 7 + $a->{t}) % 10 == 6;
        $present{"$key j"}++;
        next;
    }
    push @bad, "event of uncommitted $key" unless $done{$key};
    push @bad, "poison $m->{subject} of $key e $a->{e}" if $m->{subject} ne 'org.s.ev' || length($a->{p}) > 6000;
    $present{"$key $a->{e}"}++;
}
# the poison events are in the dead-letter table, and nothing else
my %rejected = map { $_ => 1 } split /\n/, $dnode->safe_psql('postgres', q{
    SELECT (e->>'s') || ' ' || (e->>'t') || ' ' || (e->>'e')
    FROM (SELECT envelope::jsonb->'attributes' AS e FROM state_hub_events.rejected) r});
my (@missing, @wrong_rejected);
for my $key (sort keys %done)
{
    for my $e (1 .. $done{$key}{n})
    {
        my $poison = $done{$key}{poison} && $e == 2;
        push @missing, "$key e $e" unless $poison ? delete $rejected{"$key $e"} : $present{"$key $e"};
    }
    push @missing, "$key junk" if $done{$key}{junk} && !$present{"$key j"};
}
is_deeply(\@bad, [], 'durable: nothing of a rolled-back transaction or savepoint, no event the stream refuses, is in the stream');
is_deeply([ sort keys %rejected ], [], 'durable: the dead-letter table holds the poison events and nothing else');
is_deeply([ @missing[ 0 .. ($#missing < 4 ? $#missing : 4) ] ], [],
    'durable: every committed event is in the stream, or in the dead-letter table if poison (' . scalar(@missing) . ' missing)');
is_deeply(\@dup, [], 'durable: every event once by Nats-Msg-Id');
check_order('durable', grep { $_->{subject} eq 'org.s.ev' } @msgs);

$dnode->stop;
$nats->stop;
done_testing();
