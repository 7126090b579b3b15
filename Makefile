# Nadi: top-level build.  The PostgreSQL extension is built with PGXS from
# src/ (SQL-callable C) and bgworkers/ (background workers); the daemons in
# edge/ and sandboxd/ have Makefiles of their own and are built from here.

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
REGRESS      = setup sessions inbox leases events placement token lifecycle egress tools sandboxd_token
REGRESS_OPTS = --temp-config=test/nadi.conf --temp-instance=tmp_check --load-extension=nadi
# isolationtester specs: test/isolation/specs/*.spec
ISOLATION      = $(sort $(notdir $(basename $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test/isolation --outputdir=output_iso \
                 --temp-config=test/nadi.conf --temp-instance=tmp_check_iso --load-extension=nadi
# TAP (PostgreSQL::Test::Cluster): test/t/*.pl
TAP_TESTS   = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_check tmp_check_iso output_iso results regression.diffs regression.out

# No LLVM bitcode: it would need clang at install time for no gain here.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# A changed header rebuilds every object (structures are shared between files).
$(OBJS): $(wildcard src/*.h bgworkers/*.h)

# The extension's layers call downward only: base, session core, SQL API
# (scripts/check-layers reads the objects' symbols; the build fails if not).
all: check-layers
check-layers: $(OBJS)
	scripts/check-layers $(OBJS)

DAEMON_DIRS = $(patsubst %/Makefile,%,$(wildcard edge/Makefile sandboxd/Makefile))

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
demo:
	scripts/nadi demo

.PHONY: daemons clean-daemons test demo check-layers
