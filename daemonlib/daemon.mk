# daemonlib/daemon.mk — the one build of every Nadi daemon (nadi-edge,
# nadi-sandboxd, nadi-gitd, nadi-credproxy and the ones after them).  A
# daemon's Makefile sets
#
#   PROG       the binary
#   SRCS       its own sources (in its directory)
#   DAEMONLIB  the daemonlib/ sources it links (names without .c)
#   EXT_SRC    sources of the extension it shares (src/NAME.c, e.g. jwt)
#   RUNTIME_SRC files of the agent runtime it drives (bgworkers/NAME.c, e.g.
#              runtime runtime_store runtime_tools runtime_output model_client http_client)
#   PKGS       pkg-config packages (libsystemd is added when present)
#
# and includes this file.  Objects of daemonlib/ and src/ are compiled into
# the daemon's directory (dl-NAME.o, src-NAME.o) with the same flags.
#
#   make            build $(PROG)
#   make COPT='--coverage -O0'   the same, with COPT added to every compile and
#                   link of $(PROG)'s objects (as PostgreSQL's COPT does for
#                   the extension; `make coverage` sets it)
#   make asan       build $(PROG)-asan (AddressSanitizer + UBSan); ASAN_DIR=/tmp/x builds elsewhere
#   make clean
#
# One warning set, one C dialect, one version: VERSION (the product) and
# nadi.control's default_version (the extension it was built against), both
# in the generated nadi_version.h (NADI_VERSION, NADI_EXT_VERSION) every
# daemon reports with --version.

# The lists are the Makefile's alone: a variable of the same name in the
# environment (test harnesses export NADI_SRC and the like) never reaches them.
$(foreach v,SRCS DAEMONLIB EXT_SRC RUNTIME_SRC,$(if $(filter environment,$(origin $(v))),$(eval $(v) :=)))

NADI_TOP := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
DL_DIR   := $(NADI_TOP)/daemonlib
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral \
           -Wno-unused-parameter -Wno-missing-field-initializers
CPPFLAGS += -D_GNU_SOURCE -iquote $(CURDIR) -iquote $(NADI_TOP) -iquote $(NADI_TOP)/src
ifeq ($(shell pkg-config --exists libsystemd && echo yes),yes)
PKGS     += libsystemd
CPPFLAGS += -DHAVE_SYSTEMD
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS)) -pthread

ERRCODES_H := $(NADI_TOP)/src/nadi_errcodes.h
OBJS = $(SRCS:.c=.o) $(DAEMONLIB:%=dl-%.o) $(EXT_SRC:%=src-%.o) $(RUNTIME_SRC:%=rt-%.o)
ASAN_DIR ?= .
ASAN_OBJS = $(SRCS:%.c=$(ASAN_DIR)/%.asan.o) $(DAEMONLIB:%=$(ASAN_DIR)/dl-%.asan.o) \
            $(EXT_SRC:%=$(ASAN_DIR)/src-%.asan.o) $(RUNTIME_SRC:%=$(ASAN_DIR)/rt-%.asan.o)
HDRS = $(wildcard *.h $(DL_DIR)/*.h $(NADI_TOP)/src/jwt*.h) nadi_version.h $(ERRCODES_H)
COMPILE = $(CC) $(CPPFLAGS) $(CFLAGS) $(COPT) $(WARN) -pthread $(PKG_CFLAGS) -c -o $@ $<
ASAN_COMPILE = $(CC) $(CPPFLAGS) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined $(WARN) -pthread $(PKG_CFLAGS) -c -o $@ $<

NADI_VERSION     := $(shell cat $(NADI_TOP)/VERSION)
NADI_EXT_VERSION := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(NADI_TOP)/nadi.control)

all: $(PROG)

# Rewritten only when a version changes (so nothing rebuilds needlessly).
nadi_version.h: $(NADI_TOP)/VERSION $(NADI_TOP)/nadi.control
	@printf '#define NADI_VERSION "%s"\n#define NADI_EXT_VERSION "%s"\n' \
		'$(NADI_VERSION)' '$(NADI_EXT_VERSION)' > $@.tmp && \
	 { cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@; }

# The SQLSTATEs and their HTTP answers (daemonlib/errcodes.c, SQLSTATE_*),
# from the one list src/errcodes.txt; the extension's build makes the same
# file the same way (top-level Makefile).
$(ERRCODES_H): $(NADI_TOP)/src/errcodes.txt $(NADI_TOP)/scripts/gen-errcodes.pl
	perl $(NADI_TOP)/scripts/gen-errcodes.pl $< > $@.tmp$$$$ && \
	{ cmp -s $@.tmp$$$$ $@ && rm -f $@.tmp$$$$ || mv -f $@.tmp$$$$ $@; }

$(PROG): $(OBJS)
	$(CC) $(CFLAGS) $(COPT) $(LDFLAGS) -o $@ $(OBJS) $(PKG_LIBS) $(LIBS_MORE)

%.o: %.c $(HDRS)
	$(COMPILE)
dl-%.o: $(DL_DIR)/%.c $(HDRS)
	$(COMPILE)
src-%.o: $(NADI_TOP)/src/%.c $(HDRS)
	$(COMPILE)
rt-%.o: $(NADI_TOP)/bgworkers/%.c $(HDRS) $(wildcard $(NADI_TOP)/bgworkers/*.h)
	$(COMPILE)

asan: $(ASAN_DIR)/$(PROG)-asan
$(ASAN_DIR)/$(PROG)-asan: $(ASAN_OBJS)
	$(CC) -fsanitize=address,undefined -g -o $@ $(ASAN_OBJS) $(PKG_LIBS) $(LIBS_MORE)
$(ASAN_DIR)/%.asan.o: %.c $(HDRS)
	@mkdir -p $(ASAN_DIR)
	$(ASAN_COMPILE)
$(ASAN_DIR)/dl-%.asan.o: $(DL_DIR)/%.c $(HDRS)
	@mkdir -p $(ASAN_DIR)
	$(ASAN_COMPILE)
$(ASAN_DIR)/src-%.asan.o: $(NADI_TOP)/src/%.c $(HDRS)
	@mkdir -p $(ASAN_DIR)
	$(ASAN_COMPILE)
$(ASAN_DIR)/rt-%.asan.o: $(NADI_TOP)/bgworkers/%.c $(HDRS)
	@mkdir -p $(ASAN_DIR)
	$(ASAN_COMPILE)

clean:
	rm -f $(PROG) $(PROG)-asan *.o nadi_version.h $(CLEAN_MORE)

.PHONY: all asan clean
