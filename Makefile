# Nadi: top-level build.  The PostgreSQL extension is built with PGXS from
# src/ (SQL-callable C) and bgworkers/ (background workers); the daemons in
# edge/, sandboxd/ and celld/ have Makefiles of their own and are built from here.

EXTENSION   = nadi
MODULE_big  = nadi
DATA        = $(filter-out %--dev.sql,$(wildcard sql/nadi--*.sql))
NADI_SRCS   = $(sort $(wildcard src/*.c) $(wildcard bgworkers/*.c))
OBJS        = $(NADI_SRCS:.c=.o)
PG_CPPFLAGS = -Isrc -Wall -Wextra -Werror -Wno-unused-parameter \
              -Wno-sign-compare -Wno-missing-field-initializers
SHLIB_LINK  = -lcrypto -ljansson -lcurl

# pg_regress: sql/<name>.sql against expected/<name>.out, in a server of its
# own started with test/nadi.conf (shared_preload_libraries = 'nadi').
REGRESS      = setup sessions inbox leases events placement token lifecycle egress tools sandboxd_token batch inbox_batch stats stats_count retention reaping
REGRESS_OPTS = --temp-config=test/nadi.conf --temp-instance=tmp_check --load-extension=nadi
# isolationtester specs: test/isolation/specs/*.spec
ISOLATION      = $(sort $(notdir $(basename $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test/isolation --outputdir=output_iso \
                 --temp-config=test/nadi.conf --temp-instance=tmp_check_iso --load-extension=nadi
# TAP (PostgreSQL::Test::Cluster): test/t/*.pl
TAP_TESTS   = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_check tmp_check_iso output_iso results regression.diffs regression.out runtime_test cellhost_test

# No LLVM bitcode: it would need clang at install time for no gain here.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# A changed header rebuilds every object (structures are shared between files).
$(OBJS): $(wildcard src/*.h bgworkers/*.h) src/nadi_errcodes.h

# The SQLSTATEs (ERRCODE_NADI_*) and their HTTP answers, from the one list
# src/errcodes.txt; the daemons' build (daemonlib/daemon.mk) makes the same
# file.  Written through a temporary file and only when it changes.
src/nadi_errcodes.h: src/errcodes.txt scripts/gen-errcodes.pl
	perl scripts/gen-errcodes.pl $< > $@.tmp$$$$ && \
	{ cmp -s $@.tmp$$$$ $@ && rm -f $@.tmp$$$$ || mv -f $@.tmp$$$$ $@; }
EXTRA_CLEAN += src/nadi_errcodes.h

# The agent runtime builds without PostgreSQL (bgworkers/README.md): its
# files compile and link with no PostgreSQL header or library, and
# test/runtime_test.c drives its state machine.
# the daemons' warning set (daemonlib/daemon.mk): nadi-celld will build these files with it
RUNTIME_WARN = -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral -Wno-unused-parameter \
               -Wno-missing-field-initializers
RUNTIME_SRCS = $(addprefix bgworkers/,runtime.c runtime_store.c runtime_tools.c cellhost.c \
                 model_client.c http_client.c)
runtime-check: runtime_test cellhost_test
	./runtime_test
	./cellhost_test
runtime_test cellhost_test: %: test/%.c test/check.h $(RUNTIME_SRCS) $(wildcard bgworkers/*.h) src/nadi_errcodes.h
	$(CC) -iquote src -std=gnu11 -O2 -g $(COPT) $(RUNTIME_WARN) \
	    -o $@ test/$@.c $(RUNTIME_SRCS) -ljansson -lcurl
installcheck: runtime-check

# The extension's layers call downward only: base, session core, SQL API
# (scripts/check-layers reads the objects' symbols; the build fails if not).
all: check-layers
check-layers: $(OBJS)
	scripts/check-layers $(OBJS)

DAEMON_DIRS = $(patsubst %/Makefile,%,$(wildcard edge/Makefile sandboxd/Makefile celld/Makefile))

all: daemons
daemons:
	@for d in $(DAEMON_DIRS); do $(MAKE) -C $$d || exit 1; done
clean: clean-daemons
clean-daemons:
	@for d in $(DAEMON_DIRS); do $(MAKE) -C $$d clean || exit 1; done

# The README's commands.  Both install what they need (scripts/bootstrap) and
# build what they need; `make test` runs every suite as an unprivileged user.
test:
	scripts/test
# `make test` with every tier built for gcov, then line and branch coverage
# per tier against test/coverage-floors.txt (docs/RELIABILITY.md, Coverage).
coverage:
	scripts/coverage
demo:
	scripts/nadi-local demo
# A chaos run (by hand; test/suites/60-chaos runs short ones in make test):
# random faults under a workload, then the checker.  SEED=N replays a run.
DURATION ?= 5m
chaos:
	scripts/chaos --duration $(DURATION) $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)
# The mutation gate (by hand): scripts/mutation --help
mutation:
	scripts/mutation $(MUTATION_ARGS)

# Screenshots of the web console (docs/CONSOLE.md) into docs/assets/console-*.png:
# test/suites/32-console against a local stack (root), keeping its pictures.
console-screenshots:
	NADI_SRC=$(CURDIR) NADI_CONSOLE_SHOTS=$(CURDIR)/docs/assets \
		PATH="$$($(PG_CONFIG) --bindir):$$PATH" test/suites/32-console

# The acceptance features (features/*.feature) against a local stack, as
# `make test` runs them (test/suites/35-features); TAGS=@approval runs some.
features:
	NADI_SRC=$(CURDIR) NADI_FEATURES_TAGS="$(TAGS)" PATH="$$($(PG_CONFIG) --bindir):$$PATH" test/suites/35-features

.PHONY: daemons clean-daemons test coverage demo features console-screenshots mutation chaos runtime-check check-layers

# nadi-sandboxd where systemd is PID 1, in full: test/suites/72-sandboxd-systemd
# with test/suites/20-sandboxd inside the booted container (root; make test
# runs the short checks only).
test-systemd:
	$(MAKE) -C sandboxd
	NADI_SRC=$(CURDIR) NADI_SYSTEMD_FULL=1 test/suites/72-sandboxd-systemd
.PHONY: test-systemd
