
# 110_worker_cancel.pl
#    pg_cancel_backend() on the durable worker abandons the current attempt
#    only, as it does to autovacuum: the worker (same pid) LOGs it and
#    starts again at once from the oldest event still in the outbox.  It
#    used to exit (an ERROR in a background worker is FATAL) and be
#    restarted by the launcher after its back-off.
#
#    First, deterministically: NATS hung, the worker waits for a batch's
#    acknowledgements; three cancels, each abandoning that wait (the batch
#    counted unconfirmed each time).  Then cancels at any moment of a
#    drain (reading, publishing, settling, sleeping) with NATS up.  In the
#    end every event is in the stream exactly once, in sequence order, the
#    outbox is empty, the pid is the first one, and stats() counts each
#    event's final attempt once (published + duplicates = events), each
#    abandoned wait as unconfirmed, nothing failed.
#
#    pg_cancel_backend() on the publisher (immediate mode, no database
#    connection: SIGINT is ignored) changes nothing: a commit waiting on a
#    hung NATS still gets its WARNING within publish_timeout, nothing is
#    lost, the publisher keeps its pid.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;

my $node = she_node('worker_cancel', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.publish_timeout = '60s'
state_hub_events.retry_interval = '10s'
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

# "published|duplicates|failed|unconfirmed|rejected" from stats()
sub counters
{
    return sql(q{SELECT concat_ws('|', published, duplicates, failed, unconfirmed, rejected)
                   FROM state_hub_events.stats()});
}

sub worker_pid { return sql('SELECT coalesce(worker_pid, 0) FROM state_hub_events.worker_status()'); }

my $cancel_re = qr/state_hub_events worker: attempt canceled/;

sub cancels
{
    my @n = (slurp_file($node->logfile) =~ /$cancel_re/g);
    return scalar @n;
}

# the worker waits for acknowledgements (a latch wait, no statement running)
sub waits_for_acks
{
    my ($pid) = @_;
    return sql(qq{SELECT count(*) FROM pg_stat_activity
                   WHERE pid = $pid AND wait_event = 'Extension'}) eq '1';
}

# cancel the worker and wait for its LOG line; false if none came
sub cancel_worker
{
    my ($pid) = @_;
    my $before = cancels();
    sql("SELECT pg_cancel_backend($pid)");
    return wait_until('the worker LOGs the cancel', 30, sub { cancels() > $before });
}

ok(wait_until('the worker', 60, sub { worker_pid() ne '0' }), 'the worker runs');
my $pid = worker_pid();
sql(q{SELECT state_hub_events.publish('org.t.warm')});
is($nats->wait_for_count(1, subject => 'org.t.warm', timeout => 60), 1, 'the worker publishes');
ok(wait_until('the outbox empties', 60, sub { sql('SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the warm-up event left the outbox');
sql('SELECT state_hub_events.stats_reset()');

# events in the order of their seqs (one transaction, one statement)
sub publish_many
{
    my ($subject, $n) = @_;
    my $ids = sql(qq{
WITH ids AS (SELECT g, state_hub_events.publish('$subject', jsonb_build_object('k', g)) AS id
               FROM generate_series(1, $n) g)
SELECT string_agg(id::text, ',' ORDER BY g) FROM ids});
    return split /,/, $ids;
}

# 1. NATS hung: three cancels, each while the worker waits for the
# acknowledgements of its first batch (1,000 events)
$nats->pause;
my @hung = publish_many('org.t.hung', 1500);
my $canceled = 0;
for my $i (1 .. 3)
{
    last unless wait_until('the worker waits for acks', 30, sub { waits_for_acks($pid) });
    last unless cancel_worker($pid);
    $canceled++;
}
is($canceled, 3, 'each cancel while the worker waited for acknowledgements was LOGged');
is(worker_pid(), $pid, 'the worker kept its pid');
ok(wait_until('a fourth attempt waits', 30, sub { waits_for_acks($pid) }),
    'the worker started again without waiting for retry_interval');
like(counters(), qr/^0\|0\|0\|3000\|0$/,
    'each abandoned wait counted its 1,000 events unconfirmed, nothing failed');
$nats->resume;
ok(wait_until('the outbox empties', 60, sub { sql('SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the outbox emptied after NATS resumed');
# the server stored the first copy of the batch: the last attempt's acks
# say "duplicate"; stats().published counts every ack, duplicates included
is(counters(), '1500|1000|0|3000|0',
    'stats(): every event acknowledged once, the first batch as duplicates of an abandoned copy');

# 2. cancels at any moment of a drain, NATS up: after each LOGged cancel
# the next one, while events remain (at most 40)
# (small batches: many attempts, so cancels land in every part of one)
sql(q{ALTER SYSTEM SET state_hub_events.worker_batch_bytes = '4kB'});
sql('SELECT pg_reload_conf()');
my @drain = publish_many('org.t.drain', 20000);
my ($sent, $logged) = (0, 0);
while ($sent < 40 && sql('SELECT count(*) > 0 FROM state_hub_events.outbox') eq 't')
{
    $sent++;
    last unless cancel_worker($pid);
    $logged++;
}
ok($sent > 0, "$sent cancels sent during the drain");
is($logged, $sent, 'each was LOGged');
ok(wait_until('the outbox empties', 120, sub { sql('SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the outbox emptied');
is(worker_pid(), $pid, 'the worker kept its pid through every cancel');
ok(!$node->log_contains('canceling statement due to user request\\n|"state_hub_events worker" \\(PID \\d+\\) exited'),
    'the worker never exited');

# the stream: every event once, first appearances in sequence order
my @want = (@hung, @drain);
is($nats->wait_for_count(1 + @want, timeout => 60), 1 + @want, 'the stream holds every event');
my @got = map { $_->{msg_id} } grep { $_->{subject} ne 'org.t.warm' } $nats->messages;
is(scalar @got, scalar @want, 'each once');
is_deeply(\@got, \@want, 'in sequence order');

# stats(): each event's final attempt acknowledged once (stored, or a
# duplicate of a copy stored by an abandoned attempt), nothing failed
# stats(): each event's final attempt acknowledged once (published counts
# every acknowledgement, duplicates of a copy an abandoned attempt stored
# included), every abandoned wait unconfirmed, nothing failed
my ($pub, $dup, $failed, $unconf, $rej) = split /\|/, counters();
is($pub, scalar @want, "published: one acknowledgement per event ($pub)");
ok($dup >= 1000 && $dup <= $unconf - 2000,
    "duplicates: at most one per abandoned event ($dup of $unconf unconfirmed)");
is("$failed|$rej", '0|0', 'nothing failed, nothing rejected');

$node->stop;

# 3. the publisher: immediate mode, NATS hung, a commit waits for its acks
my $imm = she_node('publisher_cancel', $nats, conf => q{
state_hub_events.publish_timeout = '3s'
state_hub_events.retry_interval = '100ms'
});
sub ping_pid { return $imm->safe_psql('postgres', q{SELECT state_hub_events.ping()->>'publisher_pid'}); }
my $ppid = ping_pid();
ok($ppid =~ /^\d+$/, "the publisher runs (pid $ppid)");
$imm->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.imm.warm')});
$imm->safe_psql('postgres', 'SELECT state_hub_events.stats_reset()');
$nats->pause;
my $bg = $imm->background_psql('postgres', on_error_stop => 0);
my $t0 = time;
$bg->query_until(qr/go/, q{\echo go
SELECT count(state_hub_events.publish('org.t.imm.hung', jsonb_build_object('k', g))) FROM generate_series(1, 3) g;
});
ok(wait_until('the commit waits', 30, sub {
    $imm->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
                                   WHERE state = 'active' AND query LIKE '%org.t.imm.hung%'
                                     AND pid <> pg_backend_pid()}) eq '1' }),
    'a commit waits on the hung server');
# the publisher has no database connection: not a backend to signal
my ($rc, $stdout, $stderr) = $imm->psql('postgres', "SELECT pg_cancel_backend($ppid)");
like($stderr, qr/PID $ppid is not a PostgreSQL backend process/,
    'pg_cancel_backend() does not reach the publisher');
$bg->query('SELECT 1');
my $took = time - $t0;
$bg->quit;
ok($took < 20, sprintf('the commit returned after its publish_timeout, not hung (%.1f s)', $took));
$nats->resume;
is(ping_pid(), $ppid, 'the publisher kept its pid');
my ($ipub, $ifailed, $iunconf) = split /\|/, $imm->safe_psql('postgres',
    q{SELECT concat_ws('|', published, failed, unconfirmed) FROM state_hub_events.stats()});
is($ipub + $ifailed + $iunconf, 3, "each event counted once ($ipub|$ifailed|$iunconf)");
$imm->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.imm.after')});
is($nats->wait_for_count(1, subject => 'org.t.imm.after', timeout => 30), 1,
    'the publisher publishes after the cancels');
$imm->stop;
$nats->stop;
done_testing();
