
# 035_encoding.pl
#    Events from databases whose encoding is not UTF8 are UTF-8 on the wire
#    (the contract: "Body = UTF-8 JSON"), in both delivery modes:
#    - LATIN1: subject, attributes and the publisher setting are converted;
#      pending() and the durable outbox keep the database's encoding; the
#      subject's limits and character checks apply to its UTF-8 form;
#    - SQL_ASCII (no conversion exists): bytes that are not UTF-8 in a
#      subject, the attributes or the publisher are refused at the call
#      (22021); UTF-8 bytes go out as they are.
#    (Review 4, finding 3; part 3 of its test.)

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('encoding', $nats, preload => 1, conf => q{
state_hub_events.retry_interval = '300ms'
state_hub_events.publish_timeout = '1s'
});

for my $db ([ 'latin', 'LATIN1' ], [ 'ascii', 'SQL_ASCII' ])
{
    $node->safe_psql('postgres',
        "CREATE DATABASE $db->[0] ENCODING '$db->[1]' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
    $node->safe_psql($db->[0], 'CREATE EXTENSION state_hub_events');
}

# The messages on org.enc.<tag>.> (the filter is ASCII; the subjects are not).
# Dies when a body or subject is not UTF-8 (natsdump's JSON lines are decoded
# as UTF-8): callers wrap it in eval.
sub messages_on
{
    my ($tag, $n) = @_;
    return $nats->wait_for_messages($n, subject => "org.enc.$tag.>", timeout => 60);
}

# psql's result and error of $sql in database $db
sub try_sql
{
    my ($db, $sql) = @_;
    my ($ret, $out, $err) = $node->psql($db, $sql);
    return ($ret, $err);
}

# --- 1. LATIN1, immediate: subject, attributes and publisher arrive as UTF-8
$node->safe_psql('latin', q{
    SET state_hub_events.publisher = 'x';
    SELECT pg_catalog.set_config('state_hub_events.publisher', 'hub-' || chr(233), false);
    SELECT state_hub_events.publish('org.enc.imm.lat' || chr(233),
                                    jsonb_build_object('name', 'Jos' || chr(233), 'n', 1));
});
my @m = eval { messages_on('imm', 1) };
is(scalar @m, 1, 'LATIN1: the event arrived with a UTF-8 subject and body') or diag($@);
if (@m)
{
    is($m[0]{subject}, "org.enc.imm.lat\x{e9}", 'LATIN1: the subject is UTF-8 (é as C3 A9)');
    is($m[0]{body}{type}, "org.enc.imm.lat\x{e9}", 'LATIN1: type is the UTF-8 subject');
    is($m[0]{body}{attributes}{name}, "Jos\x{e9}", 'LATIN1: the attribute is UTF-8');
    is($m[0]{body}{publisher}, "hub-\x{e9}", 'LATIN1: the publisher setting is converted too');
}

# pending() answers in the database's encoding
is((split /\n/, $node->safe_psql('latin', q{
    BEGIN;
    SELECT state_hub_events.publish('org.enc.p.lat' || chr(233), jsonb_build_object('name', 'Jos' || chr(233)));
    SELECT subject = 'org.enc.p.lat' || chr(233) AND attributes->>'name' = 'Jos' || chr(233)
      FROM state_hub_events.pending();
    ROLLBACK;
}))[-1], "t", 'LATIN1: pending() gives subject and attributes in the database encoding');

# checks run on the UTF-8 form: 200 × é is 204 bytes here, 404 in UTF-8
my ($ret, $err) = try_sql('latin', q{SELECT state_hub_events.publish('org.' || repeat(chr(233), 200))});
like($err, qr/subject of 404 bytes/, 'LATIN1: the subject length limit counts UTF-8 bytes');
($ret, $err) = try_sql('latin', q{SELECT state_hub_events.publish('org.enc.x' || chr(160) || 'y')});
like($err, qr/whitespace or control characters.*\n.*U\+00A0 at position 10/,
    'LATIN1: a no-break space (0xA0) in a subject is refused, named as U+00A0');

# --- 2. SQL_ASCII, immediate: non-UTF-8 bytes refused at the call (22021)
for my $case (
    [ 'subject', q{SELECT state_hub_events.publish(convert_from('\x6f72672e656e632e612e78ff', 'SQL_ASCII'))} ],
    [ 'attributes', q{SELECT state_hub_events.publish('org.enc.a.x', jsonb_build_object('k', convert_from('\x41ff', 'SQL_ASCII')))} ],
    [ 'publisher', q{SELECT set_config('state_hub_events.publisher', convert_from('\x68ff', 'SQL_ASCII'), false);
                     SELECT state_hub_events.publish('org.enc.a.x')} ])
{
    ($ret, $err) = try_sql('ascii', "\\set VERBOSITY verbose\n$case->[1]");
    like($err, qr/ERROR:  22021: cannot publish an event whose $case->[0]\b.*is not valid UTF-8/,
        "SQL_ASCII: a $case->[0] that is not UTF-8 is refused at the call with 22021");
}
$node->safe_psql('ascii', q{
    SELECT state_hub_events.publish(convert_from('\x6f72672e656e632e612e6361c3a9', 'SQL_ASCII'),
                                    jsonb_build_object('name', convert_from('\x4a6f73c3a9', 'SQL_ASCII')));
});
@m = eval { messages_on('a', 1) };
is(scalar @m, 1, 'SQL_ASCII: exactly the UTF-8 event arrived') or diag($@);
is($m[0]{subject}, "org.enc.a.ca\x{e9}", 'SQL_ASCII: UTF-8 bytes in the subject go out as they are') if @m;
is($m[0]{body}{attributes}{name}, "Jos\x{e9}", 'SQL_ASCII: UTF-8 attributes go out as they are') if @m;

# --- 3. durable mode in each database: the outbox keeps the database's
# encoding, the worker publishes UTF-8
sub durable_in
{
    my ($db) = @_;
    $node->append_conf('postgresql.conf', qq{
state_hub_events.database = '$db'
state_hub_events.delivery = 'durable'
});
    $node->restart;
    $node->poll_query_until($db, 'SELECT worker_pid IS NOT NULL FROM state_hub_events.backlog()')
      or die "the durable worker of $db did not start";
}

durable_in('latin');
$nats->stop;    # the rows stay in the outbox, to be read
$node->safe_psql('latin', q{
    SELECT state_hub_events.publish('org.enc.d.lat' || chr(233), jsonb_build_object('name', 'Jos' || chr(233)));
});
is($node->safe_psql('latin', q{
    SELECT subject = 'org.enc.d.lat' || chr(233)
       AND envelope::jsonb->'attributes'->>'name' = 'Jos' || chr(233)
       AND envelope::jsonb->>'type' = 'org.enc.d.lat' || chr(233)
      FROM state_hub_events.outbox WHERE subject LIKE 'org.enc.d.%'
}), 't', 'LATIN1 durable: the outbox row is text in the database encoding');
$nats->start;
@m = eval { messages_on('d', 1) };
is(scalar @m, 1, 'LATIN1 durable: the worker published the event as UTF-8') or diag($@);
if (@m)
{
    is($m[0]{subject}, "org.enc.d.lat\x{e9}", 'LATIN1 durable: the subject is UTF-8');
    is($m[0]{body}{type}, "org.enc.d.lat\x{e9}", 'LATIN1 durable: type is UTF-8');
    is($m[0]{body}{attributes}{name}, "Jos\x{e9}", 'LATIN1 durable: the attribute is UTF-8');
}
$node->poll_query_until('latin', 'SELECT events = 0 FROM state_hub_events.backlog()')
  or die 'the LATIN1 outbox did not drain';

durable_in('ascii');
($ret, $err) = try_sql('ascii',
    q{SELECT state_hub_events.publish(convert_from('\x6f72672e656e632e652e78ff', 'SQL_ASCII'))});
like($err, qr/not valid UTF-8/, 'SQL_ASCII durable: a subject that is not UTF-8 is refused at the call');
$node->safe_psql('ascii', q{
    SELECT state_hub_events.publish(convert_from('\x6f72672e656e632e652e6361c3a9', 'SQL_ASCII'),
                                    jsonb_build_object('name', convert_from('\x4a6f73c3a9', 'SQL_ASCII')));
});
@m = eval { messages_on('e', 1) };
is(scalar @m, 1, 'SQL_ASCII durable: exactly the UTF-8 event arrived') or diag($@);
is($m[0]{subject}, "org.enc.e.ca\x{e9}", 'SQL_ASCII durable: the subject is UTF-8') if @m;
is($m[0]{body}{attributes}{name}, "Jos\x{e9}", 'SQL_ASCII durable: the attribute is UTF-8') if @m;

done_testing();
