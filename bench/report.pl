#!/usr/bin/perl
# bench/report.pl — turn bench/run.sh's measurements into markdown.
#
#   report.pl RAW COMMIT_LAT BIG DATE MACHINE VERSIONS SETTINGS R BIG_N \
#             "T2 T10 T32 TC THOT T1" LOAD_START LOAD_END MINUTES > RESULTS.md
#   report.pl --readme RESULTS.md README.md   (replace the README's section)

use strict;
use warnings;
use File::Basename qw(dirname);

sub slurp { local $/; open my $f, '<', $_[0] or die "$_[0]: $!"; return <$f>; }

if ($ARGV[0] eq '--readme')
{
    my (undef, $results, $readme) = @ARGV;
    my $r = slurp($results);
    $r =~ s/^# .*\n+//;    # drop the title: the README has its own heading
    $r =~ s/\n### Where the time goes\n.*?(?=\n### )//s;    # the analysis stays in bench/
    my $text = slurp($readme);
    $text =~ s/(<!-- bench:begin -->\n).*?(<!-- bench:end -->)/$1$r\n$2/s
      or die "README has no <!-- bench:begin --> ... <!-- bench:end --> section\n";
    open my $fh, '>', $readme or die $!;
    print $fh $text;
    exit 0;
}

my ($rawf, $latf, $bigf, $date, $machine, $versions, $settings, $R, $BIGN, $counts,
    $load0, $load1, $minutes) = @ARGV;
my ($T2, $T10, $T32, $TC, $THOT, $T1) = split ' ', $counts;

sub median { my @s = sort { $a <=> $b } grep { defined } @_; return undef unless @s; my $m = int(@s / 2); return @s % 2 ? $s[$m] : ($s[$m - 1] + $s[$m]) / 2; }
sub minmax { my @s = sort { $a <=> $b } @_; return ($s[0], $s[-1]); }
sub fmt { my ($f, $v) = @_; return defined $v ? sprintf($f, $v) : '—'; }

my %runs;    # "group/variant/shape" => { run => {tps, lat, p99, xacts, landed, batches, events} }
for my $line (split /\n/, slurp($rawf))
{
    my ($g, $v, $shape, $run, $tps, $lat, $p99, $xacts, $landed, $pb, $pe, $cpu) = split /\t/, $line;
    $runs{"$g/$v/$shape"}{$run} = { tps => $tps, lat => $lat, p99 => $p99, xacts => $xacts,
        landed => $landed, batches => $pb, events => $pe, cpu => $cpu // '' };
}
sub values_of { my ($key, $field) = @_; my $r = $runs{$key} || {}; return map { $r->{$_}{$field} } sort keys %$r; }
sub stat_of { return median(values_of(@_)); }
# CPU per transaction, the median of each part over the rounds: "a / b / c / d" µs
sub cpu_of
{
    my @runs = grep { /^\d+\/\d+\/\d+\/\d+$/ } values_of($_[0], 'cpu');
    return '—' unless @runs;
    my @parts = map { my $i = $_; median(map { (split m{/})[$i] } @runs) } 0 .. 3;
    return join(' / ', map { sprintf('%.0f', $_) } @parts);
}

# ratio of medians, and the ratio within each round
sub ratio
{
    my ($a, $b) = @_;
    my ($ma, $mb) = (stat_of($a, 'tps'), stat_of($b, 'tps'));
    return (undef, '') unless defined $ma && defined $mb && $mb > 0;
    my @per;
    for my $run (sort keys %{ $runs{$a} })
    {
        my $y = $runs{$b}{$run} or next;
        push @per, sprintf('%.2f', $runs{$a}{$run}{tps} / $y->{tps}) if $y->{tps} > 0;
    }
    return ($ma / $mb, join(', ', @per));
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
$out .= "Run of $date on $machine; $versions; $settings. "
  . "The machine is shared with other work: load average (1, 5, 15 min) $load0 at the start, $load1 at the end; the run took $minutes min. "
  . "Every variant uses the same server, the same table shape and the same ~300-byte payload; the variants alternate, $R round(s). "
  . "Every pgbench run is bounded by its number of transactions (`-t`, per client), not by time. "
  . "Medians, with min-max over the rounds; the ratios compare variants measured in the same run.\n\n";

my @tables = (
    [ 'c2', 1, "2 clients, transactions of 1 inserted row (pgbench -c2 -j2 -t$T2)" ],
    [ 'c2', 10, "2 clients, transactions of 10 inserted rows (pgbench -c2 -j2 -t$T10)" ],
    [ 'c32', 1, "32 clients, 1 row (pgbench -c32 -j2 -t$T32)" ],
    [ 'connect', 1, "A new connection per transaction, 2 clients, 1 row (pgbench -C -c2 -j2 -t$TC)" ],
);
for my $t (@tables)
{
    my ($g, $shape, $title) = @$t;
    next unless $runs{"$g/plain/$shape"};
    $out .= "### $title\n\n";
    $out .= "| variant | TPS median (min-max) | mean latency ms | p99 ms | vs no trigger | vs NOTIFY | vs outbox | events per publisher write | events landed | CPU µs per transaction: sessions / publisher / worker / nats-server |\n";
    $out .= "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for my $v (qw(plain notify outbox emit_ack emit_noack emit_durable emit_durable_paused))
    {
        my $key = "$g/$v/$shape";
        next unless $runs{$key};
        my @tps = values_of($key, 'tps');
        my ($lo, $hi) = minmax(@tps);
        my @ratios = map { scalar((ratio($key, "$g/$_/$shape"))[0]) } qw(plain notify outbox);
        my ($sb, $se) = (0, 0);
        for my $r (values %{ $runs{$key} })
        {
            next if $r->{batches} eq '-';
            $sb += $r->{batches}; $se += $r->{events};
        }
        my $per = $sb > 0 ? sprintf('%.1f (%d writes)', $se / $sb, $sb) : '—';
        my @landed = values_of($key, 'landed');
        my $landed = '—';
        if (grep { $_ ne '-' } @landed)
        {
            my @short = grep { my ($h, $w) = split m{/}; $h < $w } @landed;
            $landed = @short ? 'NOT all: ' . join(', ', @landed) : 'all (' . join(', ', map { (split m{/})[1] } @landed) . ')';
        }
        $out .= sprintf("| %s | %.0f (%.0f-%.0f) | %.3f | %.3f | %s | %s | %s | %s | %s | %s |\n",
            $label{$v}, median(@tps), $lo, $hi, stat_of($key, 'lat'), stat_of($key, 'p99'),
            (map { fmt('%.2fx', $_) } @ratios), $per, $landed, cpu_of($key));
    }
    $out .= "\n";
}

# lock hold
if ($runs{'hot/hot_plain/1'})
{
    my ($r, $per) = ratio('hot/hot_emit_ack/1', 'hot/hot_plain/1');
    $out .= "### Lock hold: every transaction updates the same row (2 clients, -t$THOT)\n\n";
    $out .= "| variant | TPS median | mean latency ms | p99 ms |\n| --- | --- | --- | --- |\n";
    $out .= sprintf("| plain UPDATE | %.0f | %.3f | %.3f |\n", stat_of('hot/hot_plain/1', 'tps'), stat_of('hot/hot_plain/1', 'lat'), stat_of('hot/hot_plain/1', 'p99'));
    $out .= sprintf("| UPDATE with emit(), acks waited for | %.0f | %.3f | %.3f |\n\n", stat_of('hot/hot_emit_ack/1', 'tps'), stat_of('hot/hot_emit_ack/1', 'lat'), stat_of('hot/hot_emit_ack/1', 'p99'));
    $out .= sprintf("Ratio %.2fx (per round: %s). The batch enters the publisher's queue while the row lock is held (commit order) and the wait for acknowledgements comes after the lock is released, so the next transaction on the hot row proceeds while the previous session still waits.\n\n", $r, $per);
}

# commit latency
my (@p50, @p99, @rtt50, @rtt99, @gap50, @gap99);
for my $line (split /\n/, slurp($latf))
{
    my ($a, $b, $c, $d, $e, $f) = split ' ', $line;
    push @p50, $a; push @p99, $b; push @rtt50, $c; push @rtt99, $d;
    push @gap50, $e if defined $e; push @gap99, $f if defined $f;
}
my ($cp50, $cp99, $r50, $r99) = (median(@p50), median(@p99), median(@rtt50), median(@rtt99));
$out .= "### Time COMMIT spends publishing one event (stats(), one client, -t$T1, acks waited for)\n\n";
$out .= "| | p50 us | p99 us |\n| --- | --- | --- |\n";
$out .= sprintf("| COMMIT publish, 1 event: hand-over to the publisher, its publish and ack, the report back | %.0f | %.0f |\n", $cp50, $cp99);
$out .= sprintf("| raw nats.c js_PublishMsg round trip (bench/natspub rtt) | %.0f | %.0f |\n", $r50, $r99);
$out .= sprintf("| ratio (the bar's) | %.2fx | %.2fx |\n", $cp50 / $r50, $cp99 / $r99);
if (@gap50)
{
    my ($g50, $g99) = (median(@gap50), median(@gap99));
    $out .= sprintf("| for reference, not the bar: raw round trip with 600 us between requests (about one client's commit spacing; bench/natspub rtt N 600) | %.0f | %.0f |\n", $g50, $g99);
    $out .= sprintf("| ratio to the spaced raw round trip | %.2fx | %.2fx |\n", $cp50 / $g50, $cp99 / $g99);
}
$out .= "\n";

# big transaction
my (@er, @ems, @ekb, @pms, @pkb, @rr, @epub, @rs, @pubkb, @rawkb, @landed, @writes);
for my $line (split /\n/, slurp($bigf))
{
    my @f = split /\t/, $line;
    push @er, $f[0]; push @ems, $f[1]; push @ekb, $f[2]; push @pms, $f[3]; push @pkb, $f[4];
    push @rr, $f[5]; push @epub, $f[6]; push @rs, $f[7] * 1000; push @pubkb, $f[8]; push @rawkb, $f[9];
    push @landed, $f[10]; push @writes, $f[11];
}
my ($erm, $rrm) = (median(@er), median(@rr));
my $all_big = !grep { !defined $_ || $_ eq '' || $_ < $BIGN } @landed;
$out .= "### One transaction of $BIGN events, BEGIN to the return of COMMIT\n\n";
$out .= "| | events/s (median, min-max) | ms | of which publishing at COMMIT, ms | peak private memory (RssAnon) |\n| --- | --- | --- | --- | --- |\n";
$out .= sprintf("| INSERT of %d rows with emit(), acks waited for (publish_timeout = 60 s) | %.0f (%.0f-%.0f) | %.0f | %.0f | backend %.0f MB, publisher %.0f MB |\n",
    $BIGN, $erm, minmax(@er), median(@ems), median(@epub), median(@ekb) / 1024, median(@pubkb) / 1024);
$out .= sprintf("| the same INSERT without trigger | | %.0f | | backend %.0f MB |\n", median(@pms), median(@pkb) / 1024);
$out .= sprintf("| raw nats.c async publish of %d envelopes, all acks (bench/natspub async) | %.0f (%.0f-%.0f) | %.0f | %.0f | process %.0f MB (peak RSS) |\n",
    $BIGN, $rrm, minmax(@rr), median(@rs), median(@rs), median(@rawkb) / 1024);
$out .= sprintf("| ratio extension / raw | %.2fx | | | |\n\n", $erm / $rrm);
$out .= sprintf("Events in the stream after each run: %s; the publisher wrote them in %s batches.\n\n",
    join(', ', @landed), join(', ', @writes));

# targets
my @t = (
    [ '32 clients, immediate, wait_for_ack = on: TPS vs plain insert', '>= 0.60x', 0.60, ratio('c32/emit_ack/1', 'c32/plain/1') ],
    [ '32 clients, immediate, wait_for_ack = off: TPS vs plain insert', '>= 0.85x', 0.85, ratio('c32/emit_noack/1', 'c32/plain/1') ],
    [ 'new connection per transaction (-C), immediate (wait_for_ack = on): TPS vs plain insert', '>= 0.90x', 0.90, ratio('connect/emit_ack/1', 'connect/plain/1') ],
    [ '32 clients, durable (worker draining): TPS vs outbox trigger', '>= 0.85x', 0.85, ratio('c32/emit_durable/1', 'c32/outbox/1') ],
    [ '2 clients, immediate, wait_for_ack = off: TPS vs NOTIFY trigger', '>= 0.95x', 0.95, ratio('c2/emit_noack/1', 'c2/notify/1') ],
    [ '1-event COMMIT publish p50 vs raw nats.c publish+ack round trip', '<= 1.30x', -1.30, $cp50 / $r50,
      join(', ', map { sprintf('%.2f', $p50[$_] / $rtt50[$_]) } 0 .. $#p50) ],
    [ "one $BIGN-event transaction vs raw nats.c async", '>= 0.80x', 0.80, $erm / $rrm,
      join(', ', map { sprintf('%.2f', $er[$_] / $rr[$_]) } 0 .. $#er) ],
);
$out .= "### Targets (issue 11)\n\n| target | bar | measured (ratio of medians) | per round | met |\n| --- | --- | --- | --- | --- |\n";
for my $x (@t)
{
    my ($name, $bar, $lim, $v, $per) = @$x;
    my $met = !defined $v ? undef : $lim >= 0 ? $v >= $lim : $v <= -$lim;
    $met = 0 if $name =~ /transaction vs raw/ && !$all_big;
    $out .= sprintf("| %s | %s | %s | %s | %s |\n", $name, $bar, fmt('%.3fx', $v), $per // '',
        !defined $met ? '—' : $met ? 'yes' : '**no**');
}
{
    my ($v, $per) = ratio('connect/emit_noack/1', 'connect/plain/1');
    $out .= sprintf("| (for reference) new connection per transaction, wait_for_ack = off: TPS vs plain insert | | %s | %s | |\n", fmt('%.2fx', $v), $per)
      if defined $v;
    ($v, $per) = ratio('c32/emit_durable_paused/1', 'c32/outbox/1');
    $out .= sprintf("| (for reference) 32 clients, durable, committing side only: TPS vs outbox trigger | | %s | %s | |\n", fmt('%.2fx', $v), $per)
      if defined $v;
}
$out .= sprintf("\nMemory of the %d-event transaction: backend %.0f MB (the same insert without trigger: %.0f MB), publisher %.0f MB, raw nats.c client %.0f MB; %s.\n\n",
    $BIGN, median(@ekb) / 1024, median(@pkb) / 1024, median(@pubkb) / 1024, median(@rawkb) / 1024,
    $all_big ? 'every event landed' : 'NOT every event landed');

# the analysis of missed targets, written by hand after looking (perf)
my $analysis = dirname(__FILE__) . '/analysis.md';
$out .= slurp($analysis) . "\n" if -f $analysis;

$out .= "### Commands\n\n```\nmake bench            # this table (bench/run.sh); QUICK=1 for a smoke run (about a minute)\n";
$out .= "pgbench -n [-C] -c2|32 -j2 -t<N> -f ins1_<variant>.sql -l bench   # and ins10_, hot_ scripts, written by bench/run.sh\n";
$out .= "PGOPTIONS='-c state_hub_events.wait_for_ack=on|off'                # immediate mode\n";
$out .= "PGOPTIONS='-c state_hub_events.delivery=durable'                   # durable mode\n";
$out .= "bench/natspub URL rtt 2000; bench/natspub URL async $BIGN\n```\n";
print $out;
