
# NatsServer.pm
#    A real nats-server with JetStream for the TAP tests: started on a free
#    loopback port in a private directory, stopped by pid.  Messages are read
#    back from the stream with test/natsdump (built on nats.c).
#
#    Read back only what a check needs: poll with count/wait_for_count (the
#    stream's state, one request, no message read), then read the messages
#    once with messages(), narrowed by subject, start sequence and limit.
#    Every wait has a deadline in seconds.
#
# IDENTIFICATION
#    test/lib/NatsServer.pm

package NatsServer;

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use IO::Socket::INET;
use IPC::Run ();
use JSON::PP;
use POSIX qw(WNOHANG WUNTRACED WIFSTOPPED);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More ();
use Time::HiRes qw(time usleep);

my $natsdump = File::Spec->rel2abs(dirname(__FILE__) . '/../natsdump');

# Messages are decoded with JSON::XS when it is installed (Debian's
# libjson-xs-perl, which make deps installs): about 100 times faster than
# JSON::PP, which takes seconds for the 50,000 messages of the soak test.
# Both give the same values (booleans are JSON::PP::Boolean in both).
my $json_class = eval { require JSON::XS; 'JSON::XS' } // 'JSON::PP';
my $json_line = $json_class->new->utf8(1);
my $json_body = $json_class->new->utf8(0);
# The server binary: NATS_SERVER (a path, e.g. another version's binary) or
# nats-server on PATH.
my $server_bin = $ENV{NATS_SERVER} || 'nats-server';
my $server_version;

# NatsServer->new(token => 'x' | user => 'u', password => 'p', port => N,
#                 auth_conf => 'authorization {...}' (user/password then name
#                 the identity the test tools use), extra_conf => '...',
#                 tool_ca/tool_cert/tool_key/tool_creds => files the test
#                 tools connect with, tool_tls_first => 1: they start TLS
#                 before the server's INFO)
sub new
{
    my ($class, %args) = @_;
    my $self = bless {%args}, $class;
    $self->{port} //= PostgreSQL::Test::Cluster::get_free_port();
    $self->{dir} = PostgreSQL::Test::Utils::tempdir('nats');
    $self->{log} = "$self->{dir}/nats-server.log";
    $self->_write_config;
    return $self;
}

sub _write_config
{
    my ($self) = @_;
    my $conf = "listen: 127.0.0.1:$self->{port}\n"
      . "jetstream { store_dir: \"$self->{dir}/js\" }\n";
    if ($self->{auth_conf})
    {
        $conf .= $self->{auth_conf};
    }
    elsif ($self->{token})
    {
        $conf .= "authorization { token: \"$self->{token}\" }\n";
    }
    elsif ($self->{user})
    {
        $conf .= "authorization { user: \"$self->{user}\", password: \"$self->{password}\" }\n";
    }
    $conf .= $self->{extra_conf} if $self->{extra_conf};
    open my $fh, '>', "$self->{dir}/nats.conf" or die $!;
    print $fh $conf;
    close $fh;
}

sub url
{
    my ($self) = @_;
    return ($self->{tool_ca} ? 'tls' : 'nats') . "://127.0.0.1:$self->{port}";
}

sub port { return $_[0]->{port}; }

# The path of the natsdump program.
sub natsdump { return $natsdump; }
# NatsServer->version: the server binary's version as [major, minor, patch]
# (nats-server --version prints "nats-server: v2.9.10").
sub version
{
    if (!$server_version)
    {
        my $out = `$server_bin --version`;
        die "$server_bin --version: $?" if $? != 0;
        $out =~ /v(\d+)\.(\d+)\.(\d+)/ or die "cannot parse nats-server version: $out";
        $server_version = [ $1, $2, $3 ];
    }
    return @$server_version;
}

# NatsServer->at_least(2, 10): the server binary is that version or newer.
sub at_least
{
    my ($class, $major, $minor) = @_;
    my ($ma, $mi) = $class->version;
    return $ma > $major || ($ma == $major && $mi >= $minor);
}

# Start the server and wait until it accepts connections and JetStream
# answers (start(no_wait => 1): return at once, e.g. for cluster members that
# need their peers; then wait_ready).
sub start
{
    my ($self, %opt) = @_;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0)
    {
        open STDOUT, '>>', $self->{log} or die $!;
        open STDERR, '>&', \*STDOUT or die $!;
        exec($server_bin, '-c', "$self->{dir}/nats.conf") or die "exec $server_bin: $!";
    }
    $self->{pid} = $pid;
    return $self if $opt{no_wait};
    return $self->wait_ready;
}

sub wait_ready
{
    my ($self, %opt) = @_;
    my $timeout = $opt{timeout} // 30;
    my $deadline = time + $timeout;
    my $listening = 0;
    while (time < $deadline)
    {
        die "nats-server on port $self->{port} exited: " . slurp_file($self->{log})
          if waitpid($self->{pid}, WNOHANG) == $self->{pid};
        if (!$listening)
        {
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 1);
            if ($s)
            {
                close $s;
                $listening = 1;
            }
        }
        # JetStream is ready once the stream API answers.
        return $self if $listening && $self->_natsdump_ok('info', 'NO_SUCH_STREAM_PROBE');
        usleep(50_000);
    }
    die $listening
      ? "timed out after $timeout s waiting for JetStream on port $self->{port} to answer (it accepts connections)"
      : "timed out after $timeout s waiting for nats-server to listen on port $self->{port}: " . slurp_file($self->{log});
}

# The identity the test tools use, as natsdump's environment.
sub _tool_env
{
    my ($self) = @_;
    my %env;
    $env{NATS_TOKEN} = $self->{token} if $self->{token};
    @env{qw(NATS_USER NATS_PASSWORD)} = ($self->{user}, $self->{password}) if $self->{user};
    $env{NATS_CA} = $self->{tool_ca} if $self->{tool_ca};
    @env{qw(NATS_CERT NATS_KEY)} = ($self->{tool_cert}, $self->{tool_key}) if $self->{tool_cert};
    $env{NATS_CREDS} = $self->{tool_creds} if $self->{tool_creds};
    $env{NATS_TLS_FIRST} = 1 if $self->{tool_tls_first};
    return %env;
}

sub _natsdump_ok
{
    my ($self, @args) = @_;
    my %env = $self->_tool_env;
    local @ENV{ keys %env } = values %env;
    my $pid = fork();
    if ($pid == 0)
    {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        exec($natsdump, $self->url, @args) or exit 3;
    }
    waitpid($pid, 0);
    return $? == 0;
}

# Run natsdump with credentials in the environment; returns (stdout,
# stderr, exit status).
sub _run_status
{
    my ($self, @args) = @_;
    my %env = $self->_tool_env;
    local @ENV{ keys %env } = values %env;
    my ($out, $err) = ('', '');
    IPC::Run::run([ $natsdump, $self->url, @args ], '<', \undef, '>', \$out, '2>', \$err);
    return ($out, $err, $? >> 8);
}

# Run natsdump; returns stdout, dies with its error when it fails.
sub _run
{
    my ($self, @args) = @_;
    my ($out, $err, $rc) = $self->_run_status(@args);
    die "natsdump @args failed (exit $rc): $err" if $rc != 0;
    return $out;
}

# _run_retry($timeout, @args): run natsdump; when NATS fails (exit 2: the
# server restarts, a cluster elects a leader) try again every 0.2 s until
# $timeout seconds have passed.  Returns stdout; dies with the last error.
sub _run_retry
{
    my ($self, $timeout, @args) = @_;
    my $deadline = time + $timeout;
    while (1)
    {
        my ($out, $err, $rc) = $self->_run_status(@args);
        return $out if $rc == 0;
        die "natsdump @args failed (exit $rc): $err" if $rc != 2 || time >= $deadline;
        Test::More::note("natsdump @args: $err(trying again)");
        usleep(200_000);
    }
}

# Wait up to $timeout seconds for the server to exit, then kill -9; reap.
sub _reap
{
    my ($self, $timeout) = @_;
    my $deadline = time + $timeout;
    while (waitpid($self->{pid}, WNOHANG) == 0)
    {
        if (time >= $deadline)
        {
            Test::More::diag("nats-server on port $self->{port} did not exit within $timeout s of SIGTERM: killed");
            kill 'KILL', $self->{pid};
            waitpid($self->{pid}, 0);
            last;
        }
        usleep(20_000);
    }
    delete $self->{pid};
}

# Stop with SIGTERM and reap (kill -9 after 30 s).
sub stop
{
    my ($self) = @_;
    return unless $self->{pid};
    $self->resume if $self->{paused};
    kill 'TERM', $self->{pid};
    $self->_reap(30);
}

sub kill9
{
    my ($self) = @_;
    return unless $self->{pid};
    kill 'KILL', $self->{pid};
    waitpid($self->{pid}, 0);
    delete $self->{pid};
}

# SIGSTOP: the server keeps its sockets but answers nothing.  kill()
# returns before the stop takes effect: the kernel stops the threads one by
# one as each next enters it (a thread in uninterruptible sleep, such as an
# fsync, stops only when that ends), and the others meanwhile still read and
# answer what arrives.  So wait until the parent is told the whole process
# stopped (waitpid WUNTRACED; the server is our child), else a message sent
# right after pause() may still be acknowledged.
sub pause
{
    my ($self) = @_;
    my $deadline = time + 10;
    kill 'STOP', $self->{pid};
    $self->{paused} = 1;
    for (;;)
    {
        my $r = waitpid($self->{pid}, WNOHANG | WUNTRACED);
        last if $r == $self->{pid} && WIFSTOPPED(${^CHILD_ERROR_NATIVE});
        die "nats-server pid $self->{pid} is not our child or exited while being paused"
          if $r == -1 || ($r == $self->{pid} && !WIFSTOPPED(${^CHILD_ERROR_NATIVE}));
        die "nats-server pid $self->{pid} did not stop within 10 s of SIGSTOP"
          if time >= $deadline;
        usleep(1_000);
    }
}

sub resume
{
    my ($self) = @_;
    kill 'CONT', $self->{pid};
    $self->{paused} = 0;
}

# The messages of the stream, oldest first: hashrefs with seq, subject,
# msg_id, expected_stream, raw (the body bytes) and body (decoded JSON).
# messages($stream, $from, subject => 'org.x.>', limit => N, timeout => S):
# from sequence $from (default: the first), only subjects matching the
# filter, at most N; natsdump stops at the last message on the filter when
# it started, and gives up after S seconds (default 60: dies).  Failures of
# NATS (a restart, a leader election) are retried within those seconds.
sub messages
{
    my ($self, $stream, $from, %opt) = @_;
    $stream //= 'ACTIVITY_EVENTS';
    my @args = ('dump', $stream);
    push @args, '--from', $from if defined $from;
    push @args, '--subject', $opt{subject} if defined $opt{subject};
    push @args, '--limit', $opt{limit} if defined $opt{limit};
    my $timeout = $opt{timeout} // 60;
    push @args, '--timeout', $timeout;
    return $self->_parse($self->_run_retry($timeout, @args));
}

# natsdump's dump output as messages.
sub _parse
{
    my ($self, $out) = @_;
    my @msgs;
    for my $line (split /\n/, $out)
    {
        my $m = $json_line->decode($line);
        $m->{body} = $json_body->decode($m->{raw});
        push @msgs, $m;
    }
    return @msgs;
}

# How many messages the stream holds (on subjects matching subject => F),
# from the stream's state: no message is read.  0 when it does not exist.
# Failures of NATS are retried for up to 30 s.
sub count
{
    my ($self, $stream, %opt) = @_;
    my @args = ('count', $stream // 'ACTIVITY_EVENTS');
    push @args, '--subject', $opt{subject} if defined $opt{subject};
    my $out = $self->_run_retry(30, @args);
    chomp $out;
    return $out;
}

# wait_for_count($n, stream => S, subject => F, timeout => T): ask the
# stream's state until it holds at least $n messages (on F), for at most T
# seconds (default 60; errors on the way, e.g. while the server restarts or
# a cluster elects a leader, count as "not yet").  Returns the last count;
# on timeout it also says (diag) what it waited for.
sub wait_for_count
{
    my ($self, $n, %opt) = @_;
    my $stream = $opt{stream} // 'ACTIVITY_EVENTS';
    my $timeout = $opt{timeout} // 60;
    my $deadline = time + $timeout;
    my ($count, $why) = (0, '');
    while (1)
    {
        my $left = int($deadline - time + 0.999);
        $left = 0 if $left < 0;
        my @args = ('count', $stream, '--at-least', $n, '--timeout', $left);
        push @args, '--subject', $opt{subject} if defined $opt{subject};
        my ($out, $err, $rc) = $self->_run_status(@args);
        $count = $1 if $out =~ /^(\d+)$/m;
        return $count if $rc == 0;
        $why = $err;
        last if $rc != 1 && $rc != 2;    # a usage error
        last if time >= $deadline;
        usleep(100_000);    # natsdump could not connect: try again
    }
    chomp $why;
    Test::More::diag("timed out after $timeout s waiting for $n messages"
          . (defined $opt{subject} ? " on $opt{subject}" : '')
          . " in stream $stream on port $self->{port}: it holds $count ($why)");
    return $count;
}

# wait_for_messages($n, stream => S, subject => F, timeout => T):
# wait_for_count, then read the messages (on F) once.
sub wait_for_messages
{
    my ($self, $n, %opt) = @_;
    $self->wait_for_count($n, %opt);
    return $self->messages($opt{stream}, undef, subject => $opt{subject});
}

# The stream's config and state, or undef when it does not exist.
sub stream_info
{
    my ($self, $stream) = @_;
    my $out = $self->_run('info', $stream // 'ACTIVITY_EVENTS');
    return decode_json($out);
}

sub last_seq
{
    my ($self, $stream) = @_;
    my $info = $self->stream_info($stream);
    return $info ? $info->{last_seq} : 0;
}

# allow_atomic($stream): set allow_atomic on the stream (nats-server 2.12
# and later); returns natsdump's (stdout, stderr, exit status).
sub allow_atomic
{
    my ($self, $stream) = @_;
    return $self->_run_status('atomic', $stream // 'ACTIVITY_EVENTS');
}

sub purge
{
    my ($self, $stream) = @_;
    $self->_run('purge', $stream // 'ACTIVITY_EVENTS');
}

sub delete_stream
{
    my ($self, $stream) = @_;
    $self->_run('delete', $stream // 'ACTIVITY_EVENTS');
}

# create_stream($stream, $subject, $dup_window_s, 'max_msg_size=N', ...):
# limits as natsdump takes them (max_msg_size, max_bytes, max_msgs,
# discard=old|new)
sub create_stream
{
    my ($self, $stream, $subject, $dup, @limits) = @_;
    $self->_run('create', $stream, $subject, $dup // (@limits ? 120 : ()), @limits);
}

# update_stream($stream, 'max_msg_size=N', ...): change a stream's limits
sub update_stream
{
    my ($self, $stream, @limits) = @_;
    $self->_run('update', $stream, @limits);
}

sub DESTROY
{
    my ($self) = @_;
    if ($self->{pid})
    {
        kill 'CONT', $self->{pid};
        kill 'TERM', $self->{pid};
        $self->_reap(10);
    }
}

1;
