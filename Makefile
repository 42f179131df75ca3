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
	src/event_json.o \
	src/publish.o \
	src/cleanup_worker.o

DATA = sql/rtevents--0.1.sql
PGFILEDESC = "rtevents - real-time event hub inside PostgreSQL"

REGRESS = publish validation insert_paths history ttl indexes
# pg_regress starts its own cluster with rtevents preloaded (initdb refuses
# root: run as an ordinary user, as test/run does).
REGRESS_OPTS = --temp-instance=./tmp_regress --temp-config=$(srcdir)/test/regress.conf

# -Wall -Wextra, less the two warnings PostgreSQL's own headers and callback
# signatures (PG_FUNCTION_ARGS, GUC hooks) would raise by the dozen.
PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -std=gnu99 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
