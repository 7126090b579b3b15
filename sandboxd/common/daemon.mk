# common/daemon.mk — the build of a threaded sandbox-host daemon together
# with the shared sources of common/ (compiled into the daemon's own
# directory as common-NAME.o, with the daemon's flags).  Included by
# gitd/Makefile and credentials-proxy/Makefile after they set PROG, SRCS,
# COMMON (names in common/) and PKGS; sd_notify is used when libsystemd is
# there (HAVE_SYSTEMD), the daemon works without it.
#
#   make            build $(PROG)
#   make asan       build $(PROG)-asan (AddressSanitizer + UBSan), ASAN_DIR=/tmp/x to build elsewhere
#   make clean

COMMON_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral
CPPFLAGS += -D_GNU_SOURCE
ifeq ($(shell pkg-config --exists libsystemd && echo yes),yes)
PKGS     += libsystemd
CPPFLAGS += -DHAVE_SYSTEMD
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS)) -pthread

OBJS = $(SRCS:.c=.o) $(COMMON:%=common-%.o)
ASAN_DIR ?= .
ASAN_OBJS = $(SRCS:%.c=$(ASAN_DIR)/%.asan.o) $(COMMON:%=$(ASAN_DIR)/common-%.asan.o)
HDRS = $(wildcard *.h $(COMMON_DIR)/*.h)
COMPILE = $(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -pthread $(PKG_CFLAGS) -c -o $@ $<
ASAN_COMPILE = $(CC) $(CPPFLAGS) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined $(WARN) -pthread $(PKG_CFLAGS) -c -o $@ $<

all: $(PROG)

$(PROG): $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(PKG_LIBS)

%.o: %.c $(HDRS)
	$(COMPILE)
common-%.o: $(COMMON_DIR)/%.c $(HDRS)
	$(COMPILE)

asan: $(ASAN_DIR)/$(PROG)-asan
$(ASAN_DIR)/$(PROG)-asan: $(ASAN_OBJS)
	$(CC) -fsanitize=address,undefined -g -o $@ $(ASAN_OBJS) $(PKG_LIBS)
$(ASAN_DIR)/%.asan.o: %.c $(HDRS)
	@mkdir -p $(ASAN_DIR)
	$(ASAN_COMPILE)
$(ASAN_DIR)/common-%.asan.o: $(COMMON_DIR)/%.c $(HDRS)
	@mkdir -p $(ASAN_DIR)
	$(ASAN_COMPILE)

clean:
	rm -f $(PROG) $(PROG)-asan *.o $(CLEAN_MORE)

.PHONY: all asan clean
