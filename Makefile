# sluice - see README.
#
#   make            build every program into bin/
#   make check      the whole test suite: -Werror build, then ASan+UBSan build
#   make demo       a receiver on loopback, sample events, a drain, the status
#   make install    PREFIX=/usr/local DESTDIR=
#
# A user's CFLAGS are kept; the warnings and the language level are appended,
# so nobody can drop them, and -Werror is only added by `make check`.

.POSIX:
.DELETE_ON_ERROR:
.SUFFIXES:

PREFIX = /usr/local
BINDIR = $(PREFIX)/bin
LIBEXECDIR = $(PREFIX)/libexec/sluice
MANDIR = $(PREFIX)/share/man
DESTDIR =

CC = cc
CFLAGS = -O2 -g
LDFLAGS =
PKG_CONFIG = pkg-config

# Where objects and programs go; `make check` builds in build/werror and build/asan.
B = build/default
BINOUT = bin
EXTRA_CFLAGS =
EXTRA_LDFLAGS =

WARNINGS = -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wpointer-arith -Wwrite-strings -Wformat=2 -Wundef \
	-Wold-style-definition -Wcast-align -Wvla
ALL_CFLAGS = $(CFLAGS) -std=c11 -D_DEFAULT_SOURCE $(WARNINGS) -Ilib \
	$$($(PKG_CONFIG) --cflags sqlite3 libcurl jansson) $(EXTRA_CFLAGS)
LIBS = $$($(PKG_CONFIG) --libs sqlite3 libcurl jansson) -lz -pthread
MHD_CFLAGS = $$($(PKG_CONFIG) --cflags libmicrohttpd)
MHD_LIBS = $$($(PKG_CONFIG) --libs libmicrohttpd)

# Plumbing and porcelain go to LIBEXECDIR; sluice and stub-receiver to BINDIR.
PLUMBING = journal-append select-undelivered post-batch classify record-results
PORCELAIN = sluice-config sluice-quarantine sluice-target sluice-status sluice-retry \
	sluice-gc sluice-vacuum sluice-emit sluice-import sluice-snapshot
FRONT = sluice
SCRIPTS = drain
SERVER = stub-receiver
PROGRAMS = $(PLUMBING) $(PORCELAIN) $(FRONT) $(SERVER)

LIB_OBJS = $(B)/log.o $(B)/clock.o $(B)/config.o $(B)/db.o $(B)/ndjson.o \
	$(B)/json.o $(B)/backoff.o $(B)/target.o $(B)/execpath.o $(B)/journal.o $(B)/http.o
LIB_HDRS = lib/log.h lib/clock.h lib/config.h lib/db.h lib/ndjson.h lib/json.h \
	lib/backoff.h lib/exitcode.h lib/target.h lib/execpath.h lib/journal.h lib/http.h
MANPAGES = $(PROGRAMS:%=man/%.1) $(SCRIPTS:%=man/%.1) man/sluice.7 man/sluice-records.5

all: $(PROGRAMS:%=$(BINOUT)/%) $(SCRIPTS:%=$(BINOUT)/%)

$(B)/.dir:
	mkdir -p $(B) $(BINOUT)
	touch $@

$(B)/%.o: lib/%.c $(LIB_HDRS) $(B)/.dir
	$(CC) $(ALL_CFLAGS) -c -o $@ lib/$*.c

$(B)/libsluice.a: $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $(LIB_OBJS)

$(B)/main-%.o: src/%.c $(LIB_HDRS) $(B)/.dir
	$(CC) $(ALL_CFLAGS) -c -o $@ src/$*.c

$(BINOUT)/stub-receiver: src/stub-receiver.c $(B)/libsluice.a $(LIB_HDRS)
	$(CC) $(ALL_CFLAGS) $(MHD_CFLAGS) -o $@ src/stub-receiver.c $(B)/libsluice.a \
		$(LDFLAGS) $(EXTRA_LDFLAGS) $(MHD_LIBS) $(LIBS)

$(BINOUT)/sluice-snapshot: $(B)/main-sluice-snapshot.o $(B)/libsluice.a
	$(CC) -o $@ $(B)/main-sluice-snapshot.o $(B)/libsluice.a $(LDFLAGS) $(EXTRA_LDFLAGS) \
		$(LIBS) $$($(PKG_CONFIG) --libs gnutls)

$(BINOUT)/%: $(B)/main-%.o $(B)/libsluice.a
	$(CC) -o $@ $(B)/main-$*.o $(B)/libsluice.a $(LDFLAGS) $(EXTRA_LDFLAGS) $(LIBS)

# Shell programs are kept in src/ and copied, so every build directory has them.
$(BINOUT)/%: src/%.sh $(B)/.dir
	cp src/$*.sh $@
	chmod 755 $@

# --- tests ---

SANITIZE = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

check: deps
	@$(MAKE) --no-print-directory all B=build/werror BINOUT=build/werror/bin \
		EXTRA_CFLAGS="-Werror"
	@$(MAKE) --no-print-directory all B=build/asan BINOUT=build/asan/bin \
		CFLAGS="-O1 -g" EXTRA_CFLAGS="-Werror $(SANITIZE)" EXTRA_LDFLAGS="$(SANITIZE)"
	@t/run-suite build/werror/bin build/asan/bin

# Installs what a fresh Debian machine lacks (as root), or says how;
# the list is t/debian-packages, which .ci/run uses too.
deps:
	@t/install-deps $$(cat t/debian-packages)

demo: deps all
	@t/demo bin

# Static analysis: cppcheck and clang-tidy with the committed configuration,
# shellcheck on every script.
lint: deps
	@t/lint

# libFuzzer harnesses in t/fuzz, each for FUZZ_SECONDS.
FUZZ_SECONDS = 10
fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) t/fuzz/run

# A part of the suite under valgrind (t/valgrind says which).
valgrind: deps
	@t/valgrind

# Figures as ratios against baselines run in the same invocation (bench/README).
bench: deps all
	@bench/run $(BINOUT)

install: all
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7
	for p in $(FRONT) $(SERVER); do cp $(BINOUT)/$$p $(DESTDIR)$(BINDIR)/; done
	for p in $(PLUMBING) $(PORCELAIN) $(SCRIPTS); do \
		cp $(BINOUT)/$$p $(DESTDIR)$(LIBEXECDIR)/; done
	for m in $(MANPAGES); do cp $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/; done

uninstall:
	for p in $(FRONT) $(SERVER); do rm -f $(DESTDIR)$(BINDIR)/$$p; done
	for p in $(PLUMBING) $(PORCELAIN) $(SCRIPTS); do rm -f $(DESTDIR)$(LIBEXECDIR)/$$p; done
	for m in $(MANPAGES); do rm -f $(DESTDIR)$(MANDIR)/man$${m##*.}/$${m#man/}; done

clean:
	rm -rf build
	for p in $(PROGRAMS) $(SCRIPTS); do rm -f bin/$$p; done

.PHONY: all check deps demo bench lint fuzz valgrind install uninstall clean
