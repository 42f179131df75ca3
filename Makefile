# rtevents: PGXS build.
#
#   make && make install                 build and install (PG_CONFIG=... to choose a server)
#   make installcheck                    pg_regress suite against a private, preloaded cluster
#   test/run                             everything CI runs: deps, warning-free build, all suites
#   demo/run                             a private cluster with a simulated job runner

EXTENSION = rtevents
MODULE_big = rtevents
OBJS = \
	src/rtevents.o \
	src/guc.o \
	src/horizon.o \
	src/connections.o \
	src/event_json.o \
	src/publish.o \
	src/cleanup_worker.o \
	src/server_worker.o \
	src/db_conn.o \
	src/listen_feed.o \
	src/http.o \
	src/feed_read.o \
	src/sequencer.o \
	src/stream.o \
	src/replay.o \
	src/request.o \
	src/auth.o \
	src/subscription.o \
	src/sse.o \
	src/client_message.o \
	src/ws.o \
	src/history.o \
	src/admin.o \
	src/assets_data.o

DATA = sql/rtevents--0.1.sql
PGFILEDESC = "rtevents - real-time event hub inside PostgreSQL"

REGRESS = publish validation insert_paths history ttl indexes connections auth
# pg_regress starts its own cluster with rtevents preloaded (initdb refuses
# root: run as an ordinary user, as test/run does).
REGRESS_OPTS = --temp-instance=./tmp_regress --temp-config=$(srcdir)/test/regress.conf

# -Wall -Wextra, less the two warnings PostgreSQL's own headers and callback
# signatures (PG_FUNCTION_ARGS, GUC hooks) would raise by the dozen.
PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -std=gnu99 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers

# The server worker links libpq (as dblink does) and libwebsockets, and
# libev: lws runs on a libev loop the worker owns (server_worker.c).
PG_CPPFLAGS += -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)
SHLIB_LINK += -lwebsockets -lev

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Unit tests of the worker's pure C modules: plain programs printing TAP,
# run by test/t/000_unit.pl.
UNIT_TESTS = test/unit/test_sequencer test/unit/test_connections \
	test/unit/test_client_message test/unit/test_auth
EXTRA_CLEAN = $(UNIT_TESTS)

unit-tests: $(UNIT_TESTS)

test/unit/test_%: test/unit/test_%.c src/%.c
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $^ -L$(pkglibdir) -lpgcommon -lpgport

# client messages are checked by request.c, which reads query strings by lws
test/unit/test_client_message: test/unit/test_client_message.c \
		src/client_message.c src/request.c
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $^ -L$(pkglibdir) -lpgcommon -lpgport \
		-lwebsockets

# auth.c without rt_token (RT_AUTH_STANDALONE), which needs the backend.  It
# checks JSON nesting with client_message.c's scan; libpgcommon's pg_hmac is
# OpenSSL's (in the server, the postgres binary brings it), and the test
# signs its own tokens with OpenSSL too.
test/unit/test_auth: test/unit/test_auth.c src/auth.c src/client_message.c \
		src/request.c src/rtevents.h
	$(CC) $(CPPFLAGS) $(CFLAGS) -DRT_AUTH_STANDALONE -o $@ \
		test/unit/test_auth.c src/auth.c src/client_message.c src/request.c \
		-L$(pkglibdir) -lpgcommon -lpgport -lcrypto -lwebsockets

.PHONY: unit-tests

# What GET / and GET /rtevents.js serve, built into the library.
ASSETS = /rtevents.js=clients/js/rtevents.js \
	/rtevents.d.ts=clients/js/rtevents.d.ts \
	/react.js=clients/js/react.js \
	/=web/index.html \
	/app.js=web/app.js \
	/style.css=web/style.css

src/assets_data.c: tools/embed $(foreach a,$(ASSETS),$(lastword $(subst =, ,$(a))))
	perl tools/embed $(ASSETS) > $@.tmp && mv $@.tmp $@

EXTRA_CLEAN += src/assets_data.c

# Every module includes the one header: a change to it rebuilds them all.
$(OBJS): src/rtevents.h

# libFuzzer targets, built with clang, ASan and UBSan; fuzz/run builds them
# and runs each on its corpus (fuzz/corpus/<name>) for a bounded time.
FUZZ_CC ?= clang
FUZZ_CFLAGS ?= -g -O1 -std=gnu99 -fno-omit-frame-pointer -fwrapv \
	-fno-strict-aliasing -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=all -Wall -Wextra -Wno-unused-parameter \
	-Wno-missing-field-initializers -Wno-ignored-attributes
FUZZ_LIBS = -L$(pkglibdir) -lpgcommon -lpgport
PARSER_FUZZ_TARGETS = fuzz/fuzz_request fuzz/fuzz_client_message \
	fuzz/fuzz_event_json
FUZZ_TARGETS += $(PARSER_FUZZ_TARGETS)
EXTRA_CLEAN += $(PARSER_FUZZ_TARGETS)

# request.c is #included by its harness (for its static RFC 3339 check),
# which also stands in for libwebsockets' query-string lookup.
fuzz/fuzz_request: fuzz/fuzz_request.c fuzz/support.c src/request.c src/rtevents.h
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_request.c $(FUZZ_LIBS)

fuzz/fuzz_client_message: fuzz/fuzz_client_message.c fuzz/support.c \
		src/client_message.c src/request.c src/rtevents.h
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_client_message.c \
		src/client_message.c src/request.c $(FUZZ_LIBS) -lwebsockets

# event_json.c's other functions need the backend: lld drops their sections
# (GNU ld would still want their symbols), and the harness supplies
# escape_json and JsonEncodeDateTime.
fuzz/fuzz_event_json: fuzz/fuzz_event_json.c fuzz/support.c src/event_json.c src/rtevents.h
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -ffunction-sections -fdata-sections \
		-fuse-ld=lld -Wl,--gc-sections -o $@ fuzz/fuzz_event_json.c \
		src/event_json.c $(FUZZ_LIBS)

# Tokens: rt_auth_verify and rt_auth_allows on arbitrary bytes.
FUZZ_TARGETS += fuzz/fuzz_token
EXTRA_CLEAN += fuzz/fuzz_token

fuzz/fuzz_token: fuzz/fuzz_token.c fuzz/support.c src/auth.c \
		src/client_message.c src/request.c src/rtevents.h
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -DRT_AUTH_STANDALONE -o $@ \
		fuzz/fuzz_token.c src/auth.c src/client_message.c src/request.c \
		$(FUZZ_LIBS) -lcrypto -lwebsockets

fuzz: $(FUZZ_TARGETS)

.PHONY: fuzz
