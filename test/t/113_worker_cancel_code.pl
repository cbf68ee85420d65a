
# 113_worker_cancel_code.pl
#    110's recovery is for a statement cancel (pg_cancel_backend), not for
#    any ERROR with its SQLSTATE (57014, query_canceled).  A trigger on the
#    outbox that raises it at every DELETE made every attempt "canceled":
#    the next one started at once, without retry_interval, thousands a
#    second, each publishing the batch again and LOGging.  Such an ERROR
#    ends the worker (FATAL) as any other does, and the launcher starts it
#    again after its back-off; once the trigger is gone the outbox drains.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('cancel_code', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.retry_interval = '10s'
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

ok(wait_until('the worker', 60, sub {
    sql('SELECT coalesce(worker_pid, 0) FROM state_hub_events.worker_status()') ne '0' }), 'the worker runs');
sql(q{
CREATE FUNCTION public.no_delete() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN RAISE EXCEPTION 'no delete now' USING ERRCODE = 'query_canceled'; END$$;
CREATE TRIGGER no_delete BEFORE DELETE ON state_hub_events.outbox
    FOR EACH ROW EXECUTE FUNCTION public.no_delete();
});
my $off = -s $node->logfile;
sql(q{SELECT state_hub_events.publish('org.t.x')});
ok(wait_until('the worker ends on the ERROR', 30, sub {
    slurp_file($node->logfile, $off) =~ /FATAL:  no delete now/ }),
    'the ERROR raised by the trigger ended the worker');
my @canceled = (slurp_file($node->logfile, $off) =~ /attempt canceled/g);
is(scalar @canceled, 0, 'no attempt was taken for a canceled one');

sql('DROP TRIGGER no_delete ON state_hub_events.outbox');
ok(wait_until('the outbox drains', 60, sub { sql('SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the restarted worker drains the outbox once the trigger is gone');

$node->stop;
$nats->stop;
done_testing();
