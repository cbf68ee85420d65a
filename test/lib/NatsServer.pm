
# NatsServer.pm
#    A real nats-server with JetStream for the TAP tests: started on a free
#    loopback port in a private directory, stopped by pid.  Messages are read
#    back from the stream with test/natsdump (built on nats.c).
#
# IDENTIFICATION
#    test/lib/NatsServer.pm

package NatsServer;

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(usleep);

my $natsdump = File::Spec->rel2abs(dirname(__FILE__) . '/../natsdump');

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
    my ($self) = @_;
    for (1 .. 200)
    {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 1);
        if ($s)
        {
            close $s;
            # JetStream is ready once the stream API answers.
            for (1 .. 400)
            {
                return $self if $self->_natsdump_ok('info', 'NO_SUCH_STREAM_PROBE');
                usleep(50_000);
            }
            die "nats-server on port $self->{port} accepts connections but JetStream does not answer";
        }
        usleep(50_000);
    }
    die "nats-server did not start on port $self->{port}: " . slurp_file($self->{log});
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

# Run natsdump with credentials in the environment; returns stdout.
sub _run
{
    my ($self, @args) = @_;
    my %env = $self->_tool_env;
    local @ENV{ keys %env } = values %env;
    open(my $fh, '-|', $natsdump, $self->url, @args) or die "natsdump: $!";
    local $/;
    my $out = <$fh> // '';
    close $fh;
    die "natsdump @args failed: $?" if $? != 0;
    return $out;
}

# Stop with SIGTERM and reap.
sub stop
{
    my ($self) = @_;
    return unless $self->{pid};
    $self->resume if $self->{paused};
    kill 'TERM', $self->{pid};
    waitpid($self->{pid}, 0);
    delete $self->{pid};
}

sub kill9
{
    my ($self) = @_;
    return unless $self->{pid};
    kill 'KILL', $self->{pid};
    waitpid($self->{pid}, 0);
    delete $self->{pid};
}

# SIGSTOP: the server keeps its sockets but answers nothing.
sub pause
{
    my ($self) = @_;
    kill 'STOP', $self->{pid};
    $self->{paused} = 1;
}

sub resume
{
    my ($self) = @_;
    kill 'CONT', $self->{pid};
    $self->{paused} = 0;
}

# Every message in the stream, oldest first: hashrefs with seq, subject,
# msg_id, expected_stream, raw (the body bytes) and body (decoded JSON).
sub messages
{
    my ($self, $stream, $from) = @_;
    $stream //= 'ACTIVITY_EVENTS';
    my $out = $self->_run('dump', $stream, defined $from ? $from : ());
    my @msgs;
    for my $line (split /\n/, $out)
    {
        my $m = decode_json($line);
        $m->{body} = JSON::PP->new->utf8(0)->decode($m->{raw});
        push @msgs, $m;
    }
    return @msgs;
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

sub create_stream
{
    my ($self, $stream, $subject, $dup) = @_;
    $self->_run('create', $stream, $subject, $dup // ());
}

sub DESTROY
{
    my ($self) = @_;
    if ($self->{pid})
    {
        kill 'CONT', $self->{pid};
        kill 'TERM', $self->{pid};
        waitpid($self->{pid}, 0);
    }
}

1;
