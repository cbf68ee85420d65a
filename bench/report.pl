#!/usr/bin/perl
# bench/report.pl — turn bench/run.sh's measurements into markdown.
#
#   report.pl RAW COMMIT_LAT BIG DATE MACHINE VERSIONS T R CLIENTS BIG_N > RESULTS.md
#   report.pl --readme RESULTS.md README.md   (replace the README's section)

use strict;
use warnings;

if ($ARGV[0] eq '--readme')
{
    my (undef, $results, $readme) = @ARGV;
    my $r = slurp($results);
    $r =~ s/^# .*\n+//;    # drop the title: the README has its own heading
    my $text = slurp($readme);
    $text =~ s/(<!-- bench:begin -->\n).*?(<!-- bench:end -->)/$1$r\n$2/s
      or die "README has no <!-- bench:begin --> ... <!-- bench:end --> section\n";
    open my $fh, '>', $readme or die $!;
    print $fh $text;
    exit 0;
}

my ($rawf, $latf, $bigf, $date, $machine, $versions, $T, $R, $C, $BIGN) = @ARGV;

sub slurp { local $/; open my $f, '<', $_[0] or die "$_[0]: $!"; return <$f>; }
sub median { my @s = sort { $a <=> $b } @_; return undef unless @s; my $m = int(@s / 2); return @s % 2 ? $s[$m] : ($s[$m - 1] + $s[$m]) / 2; }
sub minmax { my @s = sort { $a <=> $b } @_; return ($s[0], $s[-1]); }

my %runs;    # "variant/shape" => [ {tps, lat, p99, xacts, landed} ]
for my $line (split /\n/, slurp($rawf))
{
    my ($v, $shape, $run, $tps, $lat, $p99, $xacts, $landed) = split /\t/, $line;
    push @{ $runs{"$v/$shape"} }, { tps => $tps, lat => $lat, p99 => $p99, xacts => $xacts, landed => $landed };
}
sub stat_of
{
    my ($key, $field) = @_;
    return median(map { $_->{$field} } @{ $runs{$key} || [] });
}

my %label = (
    plain      => '1. no trigger (floor)',
    notify     => '2. NOTIFY trigger (pg_notify)',
    outbox     => '3. outbox table trigger (PL/pgSQL)',
    emit_ack   => '4. emit(), immediate, wait_for_ack = on',
    emit_noack => '4b. emit(), immediate, wait_for_ack = off',
    emit_durable => '5. emit(), durable (the worker drains during the run)',
    emit_durable_paused => '5b. emit(), durable, committing side only (the worker publishes after the run)',
);

my $out = "# Benchmark results\n\n";
$out .= "Run of $date on $machine; $versions. Every variant uses the same server, the same table shape and the same ~300-byte payload; runs alternate between variants. pgbench -n -c$C -j$C -T$T, $R run(s) each, synchronous_commit = on. Medians, with min-max over the runs.\n\n";

for my $shape (1, 10)
{
    $out .= "### Transactions of $shape inserted row" . ($shape > 1 ? 's' : '') . "\n\n";
    $out .= "| variant | TPS median (min-max) | mean latency ms | p99 ms | vs no trigger | vs NOTIFY | vs outbox | events landed |\n";
    $out .= "| --- | --- | --- | --- | --- | --- | --- | --- |\n";
    my $base = stat_of("plain/$shape", 'tps');
    my $ntf = stat_of("notify/$shape", 'tps');
    my $obx = stat_of("outbox/$shape", 'tps');
    for my $v (qw(plain notify outbox emit_ack emit_noack emit_durable emit_durable_paused))
    {
        my $rs = $runs{"$v/$shape"} or next;
        my $tps = stat_of("$v/$shape", 'tps');
        my ($lo, $hi) = minmax(map { $_->{tps} } @$rs);
        my $landed = join(', ', map { $_->{landed} } @$rs);
        $landed = '—' if $landed =~ /^[-, ]+$/;
        $out .= sprintf("| %s | %.0f (%.0f-%.0f) | %.3f | %.3f | %.2fx | %.2fx | %.2fx | %s |\n",
            $label{$v}, $tps, $lo, $hi, stat_of("$v/$shape", 'lat'), stat_of("$v/$shape", 'p99'),
            $tps / $base, $tps / $ntf, $tps / $obx, $landed);
    }
    $out .= "\n";
}

# lock hold
my $hp = stat_of('hot_plain/1', 'tps');
my $he = stat_of('hot_emit_ack/1', 'tps');
$out .= "### Lock hold: every transaction updates the same row\n\n";
$out .= "| variant | TPS median | mean latency ms | p99 ms |\n| --- | --- | --- | --- |\n";
$out .= sprintf("| plain UPDATE | %.0f | %.3f | %.3f |\n", $hp, stat_of('hot_plain/1', 'lat'), stat_of('hot_plain/1', 'p99'));
$out .= sprintf("| UPDATE with emit(), acks waited for | %.0f | %.3f | %.3f |\n\n", $he, stat_of('hot_emit_ack/1', 'lat'), stat_of('hot_emit_ack/1', 'p99'));
$out .= sprintf("Ratio %.2fx. The wait for acknowledgements happens after the row lock is released, so the next transaction on the hot row proceeds while the previous session still waits: with $C clients the row is busy only for the transaction itself.\n\n", $he / $hp);

# commit latency
my (@p50, @p99, @rtt50, @rtt99);
for my $line (split /\n/, slurp($latf))
{
    my ($a, $b, $c, $d) = split ' ', $line;
    push @p50, $a; push @p99, $b; push @rtt50, $c; push @rtt99, $d;
}
my ($cp50, $cp99, $r50, $r99) = (median(@p50), median(@p99), median(@rtt50), median(@rtt99));
$out .= "### Time COMMIT spends publishing one event (stats(), one client)\n\n";
$out .= "| | p50 us | p99 us |\n| --- | --- | --- |\n";
$out .= sprintf("| COMMIT publish, 1 event, acks waited for | %.0f | %.0f |\n", $cp50, $cp99);
$out .= sprintf("| raw nats.c js_PublishMsg round trip | %.0f | %.0f |\n", $r50, $r99);
$out .= sprintf("| ratio | %.2fx | %.2fx |\n\n", $cp50 / $r50, $cp99 / $r99);

# big transaction
my (@er, @ems, @ekb, @pms, @pkb, @rr, @epub, @rs);
for my $line (split /\n/, slurp($bigf))
{
    my ($a, $b, $c, $d, $e, $f, $g, $h) = split /\t/, $line;
    push @er, $a; push @ems, $b; push @ekb, $c; push @pms, $d; push @pkb, $e; push @rr, $f;
    push @epub, $g // 0; push @rs, ($h // 0) * 1000;
}
my ($erm, $rrm) = (median(@er), median(@rr));
$out .= "### One transaction of $BIGN events, BEGIN to the return of COMMIT\n\n";
$out .= "| | events/s (median, min-max) | ms | of which publishing at COMMIT, ms | backend peak RSS |\n| --- | --- | --- | --- | --- |\n";
$out .= sprintf("| INSERT of %d rows with emit(), acks waited for | %.0f (%.0f-%.0f) | %.0f | %.0f | %.0f MB |\n", $BIGN, $erm, minmax(@er), median(@ems), median(@epub), median(@ekb) / 1024);
$out .= sprintf("| the same INSERT without trigger | | %.0f | | %.0f MB |\n", median(@pms), median(@pkb) / 1024);
$out .= sprintf("| raw nats.c async publish of %d envelopes, all acks | %.0f (%.0f-%.0f) | %.0f | %.0f | |\n", $BIGN, $rrm, minmax(@rr), median(@rs), median(@rs));
$out .= sprintf("| ratio extension / raw | %.2fx | | | |\n\n", $erm / $rrm);

# targets
my $noack_landed = join(',', map { $_->{landed} } @{ $runs{'emit_noack/1'} || [] });
my $all_landed = !grep { my ($h, $w) = split m{/}; $h < $w } split /,/, $noack_landed;
my @t = (
    [ 'emit() wait_for_ack=off, 1 row: TPS vs NOTIFY trigger', '>= 0.90x', stat_of('emit_noack/1', 'tps') / stat_of('notify/1', 'tps'), 0.90, $all_landed ? 'every event landed' : 'NOT every event landed' ],
    [ 'emit() wait_for_ack=on, 1 row: TPS vs plain insert', '>= 0.75x', stat_of('emit_ack/1', 'tps') / stat_of('plain/1', 'tps'), 0.75, '' ],
    [ "one transaction of $BIGN events vs raw nats.c async", '>= 0.70x', $erm / $rrm, 0.70, sprintf('peak RSS %.0f MB (plain insert %.0f MB)', median(@ekb) / 1024, median(@pkb) / 1024) ],
    [ 'COMMIT publish p50 of 1 event vs raw publish+ack RTT', '<= 1.20x', $cp50 / $r50, -1.20, '' ],
);
$out .= "### Targets\n\n| target | bar | measured | met |\n| --- | --- | --- | --- |\n";
for my $x (@t)
{
    my ($name, $bar, $v, $lim, $note) = @$x;
    my $met = $lim >= 0 ? $v >= $lim : $v <= -$lim;
    $out .= sprintf("| %s | %s | %.2fx%s | %s |\n", $name, $bar, $v, $note ? " ($note)" : '', $met ? 'yes' : '**no**');
}
{
    my $d = stat_of('emit_durable/1', 'tps');
    if (defined $d)
    {
        my $v = $d / stat_of('outbox/1', 'tps');
        $out .= sprintf("| emit() durable, 1 row: TPS vs outbox trigger | >= 0.90x | %.2fx | %s |\n", $v, $v >= 0.90 ? 'yes' : '**no**');
    }
    my $p = stat_of('emit_durable_paused/1', 'tps');
    if (defined $p)
    {
        my $v = $p / stat_of('outbox/1', 'tps');
        $out .= sprintf("| emit() durable, 1 row, committing side alone (no relay runs for the outbox trigger either): TPS vs outbox trigger | >= 0.90x | %.2fx | %s |\n", $v, $v >= 0.90 ? 'yes' : '**no**');
    }
    $out .= "\n";
}

# the analysis of missed targets, written by hand after looking (perf)
use File::Basename qw(dirname);
my $analysis = dirname(__FILE__) . '/analysis.md';
$out .= slurp($analysis) . "\n" if -f $analysis;

$out .= "### Commands\n\n```\nmake bench            # this table (bench/run.sh); QUICK=1 for a smoke run\n";
$out .= "pgbench -n -c$C -j$C -T$T -f ins1_<variant>.sql -l bench    # and ins10_, hot_ scripts, written by bench/run.sh\n";
$out .= "PGOPTIONS='-c state_hub_events.wait_for_ack=on|off'         # for the emit() variants\n";
$out .= "bench/natspub URL rtt 2000; bench/natspub URL async $BIGN\n```\n";
print $out;
