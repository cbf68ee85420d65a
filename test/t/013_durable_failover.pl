
# 013_durable_failover.pl
#    Durable delivery across failover: events committed on the primary while
#    NATS is down are delivered by the worker of the promoted standby.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $primary = she_node('primary', $nats, preload => 1, streaming => 1, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.retry_interval = '300ms'
});
$primary->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.f.before')});
my @m;
for (1 .. 100) { @m = eval { $nats->messages }; last if @m; usleep(100_000); }
is(scalar @m, 1, 'the primary\'s worker publishes');

$primary->backup('bk');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bk', has_streaming => 1);
$standby->start;

$nats->stop;
$primary->safe_psql('postgres', q{
    SELECT count(state_hub_events.publish('org.t.f.backlog', jsonb_build_object('i', i))) FROM generate_series(1, 100) i;
});
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT count(*) FROM state_hub_events.outbox'), '100',
    'the standby has the backlog');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'state_hub_events worker'}),
    '0', 'no worker runs on the standby');

$primary->stop('immediate');
$standby->promote;
$nats->start;
for (1 .. 300)
{
    @m = grep { $_->{subject} eq 'org.t.f.backlog' } eval { $nats->messages };
    last if @m >= 100;
    usleep(100_000);
}
is(scalar @m, 100, 'after promotion the new primary\'s worker delivered the whole backlog');
is_deeply([ map { $_->{body}{attributes}{i} } @m ], [ 1 .. 100 ], 'in order');
ok($standby->poll_query_until('postgres', 'SELECT events = 0 FROM state_hub_events.backlog()'),
    'the backlog drained on the new primary');

$standby->stop;
$nats->stop;
done_testing();
