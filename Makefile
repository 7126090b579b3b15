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
# The extension version this library's workers run at: nadi.control's
# default_version (the embedded cells wait while the schema is another).
# (read next to this Makefile, so that a build in another directory finds it)
NADI_EXT_VERSION := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" \
                      $(dir $(firstword $(MAKEFILE_LIST)))nadi.control)
ifeq ($(NADI_EXT_VERSION),)
$(error nadi.control next to the Makefile has no default_version)
endif
PG_CPPFLAGS += -DNADI_EXT_VERSION='"$(NADI_EXT_VERSION)"'

# pg_regress: sql/<name>.sql against expected/<name>.out, in a server of its
# own started with test/nadi.conf (shared_preload_libraries = 'nadi').
REGRESS      = setup sessions inbox leases events placement token lifecycle egress tools sandboxd_token batch inbox_batch stats stats_count retention reaping fork busy session_files
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
bgworkers/cell.o src/caller.o: nadi.control

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
RUNTIME_SRCS = $(addprefix bgworkers/,runtime.c runtime_store.c runtime_tools.c runtime_output.c cellhost.c \
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

# NADI_EXTENSION_ONLY=1: the extension alone (the Debian build runs it once
# per PostgreSQL major with pg_buildext and builds the daemons once); so
# does an empty DAEMON_DIRS.  `make install-extension` is that install.
ifneq ($(NADI_EXTENSION_ONLY),1)
all: daemons
clean: clean-daemons
ifneq ($(strip $(DAEMON_DIRS)),)
install: install-daemons
uninstall: uninstall-daemons
endif
endif
daemons:
	@for d in $(DAEMON_DIRS); do $(MAKE) -C $$d || exit 1; done
clean-daemons:
	@for d in $(DAEMON_DIRS); do $(MAKE) -C $$d clean || exit 1; done

# `make install` installs the extension (PGXS, into PostgreSQL's directories)
# and the daemons; `make uninstall` removes exactly those files.  The daemons'
# part follows the usual convention (DESTDIR is prepended to every path):
#   PREFIX      /usr/local
#   BINDIR      $(PREFIX)/bin: nadi-edge, nadi-acp, nadi, nadi-sandboxd,
#               nadi-sbx-init (next to nadi-sandboxd, where it looks first),
#               nadi-gitd, nadi-credproxy, nadi-celld
#   SYSCONFDIR  /etc: the units read $(SYSCONFDIR)/nadi/*.conf; nothing is
#               written there (an administrator's files are never replaced,
#               nor removed by uninstall)
#   DOCDIR      $(PREFIX)/share/doc/nadi: the units' Documentation= pages, and
#               the example configurations in $(DOCDIR)/examples
#   UNITDIR     $(PREFIX)/lib/systemd/system (systemd reads /usr/local/lib/...
#               too); the units' /usr/local/bin/, /usr/local/share/doc/nadi
#               and /etc/nadi/ are rewritten to BINDIR, DOCDIR and SYSCONFDIR
#   MANDIR      $(PREFIX)/share/man
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
DOCDIR     ?= $(PREFIX)/share/doc/nadi
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MANDIR     ?= $(PREFIX)/share/man
NADI_INSTALL_BIN  = install -m 755
NADI_INSTALL_DATA = install -m 644

NADI_BINS  = edge/nadi-edge edge/nadi-acp edge/cli/nadi sandboxd/nadi-sandboxd sandboxd/nadi-sbx-init \
             sandboxd/gitd/nadi-gitd sandboxd/credentials-proxy/nadi-credproxy celld/nadi-celld
NADI_UNITS = edge/nadi-edge.service sandboxd/nadi-sandboxd.service sandboxd/gitd/nadi-gitd.service \
             sandboxd/credentials-proxy/nadi-credproxy.service celld/nadi-celld.service
NADI_EXAMPLES = $(sort $(wildcard sandboxd/*.conf.example sandboxd/*/*.conf.example celld/*.conf.example \
                  edge/*.conf.example))
NADI_MAN1  = edge/cli/nadi.1
# the pages the units' Documentation= lines name, as DOCDIR/NAME
NADI_DOCS  = HTTP_API.md:docs/HTTP_API.md SANDBOXD.md:docs/SANDBOXD.md OPERATIONS.md:docs/OPERATIONS.md \
             celld/README.md:celld/README.md gitd/README.md:sandboxd/gitd/README.md \
             credentials-proxy/README.md:sandboxd/credentials-proxy/README.md
NADI_UNIT_SED = -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/doc/nadi|$(DOCDIR)|g' \
                -e 's|/etc/nadi/|$(SYSCONFDIR)/nadi/|g'

# The paths go into sed expressions, shell words and unit files: refuse
# whitespace and the characters that would change what they mean there.
NADI_PATH_VARS = DESTDIR PREFIX BINDIR SYSCONFDIR DOCDIR UNITDIR MANDIR
nadi_bad_paths = $(strip $(foreach v,$(NADI_PATH_VARS),$(if $(or $(word 2,x$($(v))x),$(findstring &,$($(v))),\
                   $(findstring |,$($(v))),$(findstring ',$($(v))),$(findstring ",$($(v))),$(findstring \,$($(v))),\
                   $(findstring %,$($(v))),$(findstring $$,$($(v))),$(findstring ;,$($(v)))),$(v))))

install-daemons uninstall-daemons: nadi-check-paths
nadi-check-paths:
	$(if $(nadi_bad_paths),$(error $(nadi_bad_paths): no whitespace or any of & | ' " \ % $$ ; in install paths))

install-daemons: daemons
	install -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(UNITDIR)' '$(DESTDIR)$(MANDIR)/man1' \
		'$(DESTDIR)$(DOCDIR)/examples' '$(DESTDIR)$(DOCDIR)/celld' '$(DESTDIR)$(DOCDIR)/gitd' \
		'$(DESTDIR)$(DOCDIR)/credentials-proxy'
	$(NADI_INSTALL_BIN) $(NADI_BINS) '$(DESTDIR)$(BINDIR)/'
	@set -e; for u in $(NADI_UNITS); do \
		echo "sed ... $$u > $(DESTDIR)$(UNITDIR)/$${u##*/}"; \
		sed $(NADI_UNIT_SED) $$u > '$(DESTDIR)$(UNITDIR)'/$${u##*/}.tmp; \
		chmod 644 '$(DESTDIR)$(UNITDIR)'/$${u##*/}.tmp; \
		mv -f '$(DESTDIR)$(UNITDIR)'/$${u##*/}.tmp '$(DESTDIR)$(UNITDIR)'/$${u##*/}; \
	done
	$(NADI_INSTALL_DATA) $(NADI_EXAMPLES) '$(DESTDIR)$(DOCDIR)/examples/'
	$(NADI_INSTALL_DATA) $(NADI_MAN1) '$(DESTDIR)$(MANDIR)/man1/'
	@set -e; for d in $(NADI_DOCS); do $(NADI_INSTALL_DATA) $${d#*:} '$(DESTDIR)$(DOCDIR)'/$${d%%:*}; done

uninstall-daemons:
	rm -f $(addprefix '$(DESTDIR)$(BINDIR)'/,$(notdir $(NADI_BINS))) \
	      $(addprefix '$(DESTDIR)$(UNITDIR)'/,$(notdir $(NADI_UNITS))) \
	      $(addprefix '$(DESTDIR)$(DOCDIR)'/examples/,$(notdir $(NADI_EXAMPLES))) \
	      $(addprefix '$(DESTDIR)$(MANDIR)'/man1/,$(notdir $(NADI_MAN1))) \
	      $(foreach d,$(NADI_DOCS),'$(DESTDIR)$(DOCDIR)'/$(firstword $(subst :, ,$(d))))
	-rmdir '$(DESTDIR)$(DOCDIR)/examples' '$(DESTDIR)$(DOCDIR)/celld' '$(DESTDIR)$(DOCDIR)/gitd' \
		'$(DESTDIR)$(DOCDIR)/credentials-proxy' '$(DESTDIR)$(DOCDIR)' 2>/dev/null

# the extension alone (what the tests and the local stack need)
install-extension:
	$(MAKE) install NADI_EXTENSION_ONLY=1

.PHONY: install-daemons uninstall-daemons nadi-check-paths install-extension

# The README's commands.  Both install what they need (scripts/bootstrap) and
# build what they need; `make test` runs every suite as an unprivileged user.
test:
	scripts/test
# Every PostgreSQL suite (pg_regress, isolation, TAP, pgTAP) on PostgreSQL 15
# (this machine) and 17 (a Debian 13 container), as a table (root).
.PHONY: test-matrix
test-matrix:
	scripts/test-matrix
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
