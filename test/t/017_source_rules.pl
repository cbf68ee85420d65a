
# 017_source_rules.pl
#    Rules of the C sources that no run can observe, checked on the text:
#    every ereport() names its SQLSTATE with errcode(); nothing between
#    SpinLockAcquire() and SpinLockRelease() reads the clock, allocates or
#    reports; every SPI_connect() result is checked.  No server needed.

use strict;
use warnings;

use File::Basename qw(dirname);
use Test::More;

my $top = $ENV{TESTDIR} // dirname(__FILE__) . '/../..';
my @files = sort glob("$top/src/*.c");
ok(scalar @files >= 10, 'found the C sources') or BAIL_OUT("no sources under $top/src");

# A balanced parenthesised group, for the arguments of a call.
my $parens;
$parens = qr/\((?:[^()]++|(??{ $parens }))*\)/;

my (@no_errcode, @under_spinlock, @unchecked_spi);
for my $f (@files)
{
    open(my $fh, '<', $f) or die "$f: $!";
    my $src = do { local $/; <$fh> };
    close $fh;
    (my $name = $f) =~ s{.*/}{};

    # comments and the contents of literals do not count (lines are kept)
    $src =~ s{(/\*.*?\*/|//[^\n]*)|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'}
             {defined $1 ? ($1 =~ tr/\n//cdr) : "\"\""}gse;

    my $line_of = sub { return 1 + (substr($src, 0, $_[0]) =~ tr/\n//); };

    while ($src =~ /\bereport\s*($parens)/g)
    {
        my ($args, $end) = ($1, pos($src));
        push @no_errcode, "$name:" . $line_of->($end - length $args)
          unless $args =~ /\berrcode\s*\(/;
    }

    while ($src =~ /\bSpinLockAcquire\s*$parens\s*;(.*?)\bSpinLockRelease\b/gs)
    {
        my ($body, $at) = ($1, $-[0]);
        push @under_spinlock, "$name:" . $line_of->($at) . " ($1)"
          if $body =~ /\b(GetCurrentTimestamp|palloc\w*|pstrdup|elog|ereport|SetLatch|WaitLatch)\s*\(/;
    }

    while ($src =~ /(^|[;{}])\s*SPI_connect\s*\(\s*\)\s*;/mg)
    {
        push @unchecked_spi, "$name:" . $line_of->($-[0] + length $1);
    }
}

is_deeply(\@no_errcode, [], 'every ereport() has an errcode()')
  or diag("without errcode: @no_errcode");
is_deeply(\@under_spinlock, [], 'no clock read, allocation or report while a spinlock is held')
  or diag("under a spinlock: @under_spinlock");
is_deeply(\@unchecked_spi, [], 'every SPI_connect() result is checked')
  or diag("unchecked: @unchecked_spi");

done_testing();
