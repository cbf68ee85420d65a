# 097_readme_privileges.pl
#    README's Security section opens with a table of what each role gets
#    after CREATE EXTENSION: a new user reads it to learn who may run what.
#    Every function, procedure, table and sequence of the schema must be in
#    it, and its "PUBLIC" and "pg_monitor" columns must say what a role with
#    no grant, and a member of pg_monitor, may actually do (EXECUTE, or
#    SELECT; USAGE for the schema).  The internal helpers count too: a
#    member of pg_monitor has USAGE on the schema and may call every helper
#    that PUBLIC may execute.

use strict;
use warnings;

use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use SheTest;

my $readme = slurp_file(dirname(__FILE__) . '/../../README.md');
my ($section) = $readme =~ /^## Security\n(.*?)^## /ms;
ok(defined $section, 'README has a Security section');
my ($table) = $section =~ /^(\| object \| PUBLIC \| `pg_monitor` \|.*?)\n\n/ms;
ok(defined $table, 'it opens with the table of privileges');

# object => [PUBLIC may, pg_monitor may] as the table states them
my %doc;
for my $line (split /\n/, $table // '')
{
    next unless $line =~ /^\| (.*?) \| (yes|no)\b[^|]*\| (yes|no)\b[^|]*\|/;
    my ($objs, $pub, $mon) = ($1, $2, $3);
    while ($objs =~ /(?:(table|sequence|schema) )?`([a-z_]+)(\(\))?`/g)
    {
        my $name = $3 ? "$2()" : ($1 // 'function') . " $2";
        $doc{$name} = [ $pub, $mon ];
    }
}
note(join(', ', sort keys %doc));

my $node = she_node('readme_privileges', undef);
$node->safe_psql('postgres', q{
CREATE ROLE she_app LOGIN;
CREATE ROLE she_mon LOGIN IN ROLE pg_monitor;
});

# what each role may do, object by object
my $rows = $node->safe_psql('postgres', q{
    SELECT p.proname || '()',
           has_function_privilege('she_app', p.oid, 'EXECUTE'),
           has_function_privilege('she_mon', p.oid, 'EXECUTE')
      FROM pg_proc p
     WHERE p.pronamespace = 'state_hub_events'::regnamespace
    UNION ALL
    SELECT CASE c.relkind WHEN 'S' THEN 'sequence ' ELSE 'table ' END || c.relname,
           has_table_privilege('she_app', c.oid, 'SELECT'),
           has_table_privilege('she_mon', c.oid, 'SELECT')
      FROM pg_class c
     WHERE c.relnamespace = 'state_hub_events'::regnamespace AND c.relkind IN ('r', 'S')
    UNION ALL
    SELECT 'schema state_hub_events',
           has_schema_privilege('she_app', 'state_hub_events', 'USAGE'),
           has_schema_privilege('she_mon', 'state_hub_events', 'USAGE')
    ORDER BY 1});
for my $row (split /\n/, $rows)
{
    my ($obj, $app, $mon) = split /\|/, $row;
    my %yes = (t => 'yes', f => 'no');
    ok(exists $doc{$obj}, "$obj is in README's table of privileges")
      or next;
    is($doc{$obj}[0], $yes{$app}, "$obj: the PUBLIC column says what a role without grants may do");
    is($doc{$obj}[1], $yes{$mon}, "$obj: the pg_monitor column says what its members may do");
}

$node->stop;
done_testing();
