
# 006_stats_preload.pl
#    With the library in shared_preload_libraries, stats() is cluster-wide:
#    counters written by one session are read from another.  Without it,
#    each backend sees its own and says so.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('preload', $nats, preload => 1, conf => q{
state_hub_events.connect_timeout = '1s'
state_hub_events.publish_timeout = '1s'
});

is($node->safe_psql('postgres', 'SELECT scope FROM state_hub_events.stats()'), 'cluster',
    'preloaded: stats() is cluster-wide');

$node->safe_psql('postgres', q{
    BEGIN;
    SELECT state_hub_events.publish('org.t.s1');
    SELECT state_hub_events.publish('org.t.s2');
    COMMIT;
    SELECT state_hub_events.publish('org.t.s3');
});
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.s4')});

my $row = $node->safe_psql('postgres', q{
    SELECT buffered, published, failed, unconfirmed, commits,
           commit_publish_p50_ms > 0, commit_publish_p99_ms >= commit_publish_p50_ms
      FROM state_hub_events.stats()});
is($row, '4|4|0|0|3|t|t', 'another session reads what two sessions published, and the commit times');
is(scalar($nats->messages), 4, 'the stream agrees');

$nats->stop;
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.t.lost')});
like($err, qr/not published/, 'NATS down: the event is not published');
$row = $node->safe_psql('postgres', q{
    SELECT failed, last_error ~ 'NATS', last_error_at > now() - interval '1 minute'
      FROM state_hub_events.stats()});
is($row, '1|t|t', 'another session sees the failure and the last error');

$node->safe_psql('postgres', 'SELECT state_hub_events.stats_reset()');
is($node->safe_psql('postgres', q{SELECT buffered, published, failed, commits, commit_publish_p50_ms IS NULL, last_error IS NULL FROM state_hub_events.stats()}),
    '0|0|0|0|t|t', 'stats_reset() zeroes the cluster-wide counters');

# without preloading: publishing refuses with a hint, stats() per backend
my $plain = she_node('plain', undef, preload => 0);
($ret, $out, $err) = $plain->psql('postgres', q{
    \set VERBOSITY verbose
    SELECT state_hub_events.publish('org.t.x')});
like($err, qr/ERROR:  55000: cannot publish events: state_hub_events is not in shared_preload_libraries/,
    'not preloaded: publish() is refused with SQLSTATE 55000');
like($err, qr/HINT:  Add state_hub_events to shared_preload_libraries/, 'and a hint');
$plain->safe_psql('postgres', q{CREATE TABLE t (id int);
    CREATE TRIGGER t AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION state_hub_events.emit('org.t.row')});
($ret, $out, $err) = $plain->psql('postgres', q{INSERT INTO t VALUES (1)});
like($err, qr/ERROR:  cannot publish events: state_hub_events is not in shared_preload_libraries/,
    'and so is emit()');
($ret, $out, $err) = $plain->psql('postgres', q{SELECT state_hub_events.ping()});
like($err, qr/ERROR:  cannot publish events: state_hub_events is not in shared_preload_libraries/,
    'and ping()');
is($plain->safe_psql('postgres', q{SELECT scope, buffered FROM state_hub_events.stats()}),
    'backend|0', 'not preloaded: stats() is this backend\'s and says so');

$plain->stop;
$node->stop;
done_testing();
