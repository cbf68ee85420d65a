#!/usr/bin/perl
# bench/memwatch.pl — peak private memory of a PostgreSQL's processes.
#
#   memwatch.pl POSTMASTER_PID STOPFILE
#
# Every 10 ms, reads RssAnon (private resident memory: what a process
# allocated itself, without the shared buffers and the queue it touches)
# of each child of the postmaster, and keeps the peak per process kind:
# "backend" (client backends), "publisher" (the state_hub_events
# publisher), "worker" (the durable worker).  When STOPFILE exists, prints
# one line "backend KB publisher KB worker KB" and exits.

use strict;
use warnings;
use Time::HiRes qw(sleep);

my ($pm, $stop) = @ARGV;
die "usage: memwatch.pl POSTMASTER_PID STOPFILE\n" unless defined $stop;
my %peak = (backend => 0, publisher => 0, worker => 0);

sub kind
{
    my ($pid) = @_;
    open my $f, '<', "/proc/$pid/cmdline" or return undef;
    my $cmd = <$f> // '';
    return 'publisher' if $cmd =~ /state_hub_events publisher/;
    return 'worker'    if $cmd =~ /state_hub_events worker/;
    return undef       if $cmd =~ /^postgres: (checkpointer|background writer|walwriter|autovacuum|logical|state_hub_events)/;
    return 'backend';
}

until (-e $stop)
{
    my $children = '';
    if (open my $c, '<', "/proc/$pm/task/$pm/children") { $children = <$c> // ''; }
    for my $pid (split ' ', $children)
    {
        my $k = kind($pid) or next;
        open my $s, '<', "/proc/$pid/status" or next;
        while (<$s>)
        {
            next unless /^RssAnon:\s+(\d+)/;
            $peak{$k} = $1 if $1 > $peak{$k};
            last;
        }
    }
    sleep 0.01;
}
print "backend $peak{backend} publisher $peak{publisher} worker $peak{worker}\n";
