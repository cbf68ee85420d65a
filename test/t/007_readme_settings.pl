
# 007_readme_settings.pl
#    The README's settings table agrees with the server: every setting is
#    listed, with the default a fresh session shows and its context.

use strict;
use warnings;

use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use SheTest;

my $readme = slurp_file(dirname(__FILE__) . '/../../README.md');
my %doc;
while ($readme =~ /^\| `(state_hub_events\.\w+)` \| `([^`]*)` \| (\w+) \|/mg)
{
    my ($name, $default, $context) = ($1, $2, $3);
    $default = '' if $default eq "''";
    $doc{$name} = { default => $default, context => $context };
}
cmp_ok(scalar keys %doc, '>=', 20, 'the README has a settings table');

my $node = she_node('readme', undef);
# pg_settings hides GUC_NO_SHOW_ALL settings (the secrets); list them by name too.
my @server = split /\n/, $node->safe_psql('postgres', q{
    LOAD 'state_hub_events';
    SELECT name FROM pg_settings WHERE name LIKE 'state_hub_events.%'
    UNION SELECT 'state_hub_events.token' UNION SELECT 'state_hub_events.password'
    UNION SELECT 'state_hub_events.nats_url'
    ORDER BY 1});
is_deeply([ sort keys %doc ], \@server, 'the README lists exactly the server\'s settings');

for my $name (@server)
{
    next unless $doc{$name};
    # pg_settings hides the secrets (GUC_NO_SHOW_ALL): nats_url, token and password
    # are connection settings of the publisher, hence sighup
    my $row = $node->safe_psql('postgres', qq{
        LOAD 'state_hub_events';
        SELECT current_setting('$name') || '|' ||
               coalesce((SELECT context FROM pg_settings WHERE name = '$name'), 'sighup')});
    my ($shown, $context) = split /\|/, $row, 2;
    $shown //= '';
    is($shown, $doc{$name}{default}, "$name: README default matches the server");
    is($context, $doc{$name}{context}, "$name: README context matches the server");
}

$node->stop;
done_testing();
