# Makefile for state_hub_events (PGXS)

MODULE_big = state_hub_events
OBJS = \
	src/ascii_text.o \
	src/backfill.o \
	src/buffer.o \
	src/ddl_guard.o \
	src/emit.o \
	src/emit_json.o \
	src/envelope.o \
	src/envelope_json.o \
	src/guc.o \
	src/launcher.o \
	src/nats_conn.o \
	src/nats_publish.o \
	src/outbox.o \
	src/ping.o \
	src/ping_request.o \
	src/publisher.o \
	src/queue.o \
	src/state_hub_events.o \
	src/stats.o \
	src/subject.o \
	src/url_mask.o \
	src/worker.o

EXTENSION = state_hub_events
DATA = state_hub_events--1.0.sql state_hub_events--1.0--1.1.sql \
	state_hub_events--1.1--1.2.sql state_hub_events--1.2--1.3.sql
PGFILEDESC = "state_hub_events - publish committed changes as NATS JetStream events"

REGRESS = validation buffer emit security settings lifecycle rejected backfill
REGRESS_OPTS = --temp-config=$(srcdir)/test/regress.conf

# Harness binaries and scratch corpora of the fuzz runs.
EXTRA_CLEAN = test/fuzz/build

SHLIB_LINK = -lnats -luuid -lpthread
PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every file includes the shared header, which includes the plain C ones
# (PGXS tracks no header dependencies).
$(OBJS): src/state_hub_events.h src/ascii_text.h src/emit_json.h src/envelope_json.h src/subject.h src/url_mask.h \
	src/nats_conn.h src/nats_publish.h src/ping.h src/ping_request.h src/publisher.h src/queue.h \
	src/compat.h

# The test helper that reads messages back from the stream.
test/natsdump: test/natsdump.c src/compat.h
	$(CC) -O2 -Wall -I$(srcdir)/src -o $@ $< -lnats

.PHONY: deps demo test test-matrix deb bench fuzz test-asan

# Install what is missing (Debian packages), as root or through sudo.
deps:
	@bash test/install-deps.sh

# Build, install, and run pg_regress and the TAP tests against a real
# nats-server; ends with a pass/fail summary.
test: deps
	@bash test/run-tests.sh

# Fuzz each plain C parser (subject checks, pattern coverage, URL masking,
# the envelope's JSON text) for FUZZ_SECONDS, then merge what was found into
# the committed corpus, minimized.  `make test` runs a short, bounded pass.
FUZZ_SECONDS ?= 120
fuzz: deps
	@bash test/fuzz/run.sh fuzz $(FUZZ_SECONDS)

# pg_regress and the TAP tests with the extension built with
# AddressSanitizer, the servers running with its runtime preloaded; fails on
# any report.  Slow (~15 min): not part of `make test`.
test-asan: deps
	@bash test/run-asan.sh
# The suites on PostgreSQL 15, 17 and 18 and nats-server 2.9 to the newest,
# in Debian roots made with debootstrap and cached (test/matrix.sh says
# which); one summary line per combination.  As root.
#   make test-matrix MATRIX="sid" MATRIX_TAP="test/t/001_publish.pl"
test-matrix:
	@bash test/install-deps.sh matrix
	@MATRIX="$(MATRIX)" MATRIX_TAP="$(MATRIX_TAP)" MATRIX_CACHE="$(MATRIX_CACHE)" \
		bash test/matrix.sh

# Debian packages, one per installed PostgreSQL version (build/deb/).
deb:
	@bash test/install-deps.sh deb
	@bash test/deb.sh build/deb

# Measure the commit path against NOTIFY, an outbox table and raw nats.c
# (QUICK=1: a smoke run under a minute).
bench: deps
	@QUICK=$(QUICK) bash bench/run.sh

# Start a throwaway nats-server and PostgreSQL, run the state hub example,
# print the envelopes that arrive in the stream.
demo: deps
	@bash examples/demo.sh
