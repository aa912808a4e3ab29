# camskeyd -- build, deps, demo, check, bench, install.
#
#   make            build build/camskeyd, the simulator and the unit tests
#   make demo       install missing packages, build, run daemon + simulator
#   make check      install missing packages, build, lint, run every test
#   make deb        build build/camskeyd_VERSION_ARCH.deb (dpkg-buildpackage, lintian)
#   make check SANITIZE=address,undefined   the same under ASan/UBSan
#   V=1             show the commands

VERSION    := 0.1.0
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR    ?= /lib/systemd/system

SANITIZE ?=
ifeq ($(SANITIZE),)
BUILD    ?= build
SANFLAGS :=
else
BUILD    ?= build/sanitize
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

CC      ?= cc
PKGS    := libmicrohttpd libcurl openssl libcjson sqlite3 hiredis
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -std=c17 -Wall -Wextra -Wpedantic -Werror -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wformat=2 -Wvla -Wimplicit-fallthrough -Wno-unused-parameter \
	-Wpointer-arith -Wcast-qual -Wundef
HARDEN := -D_FORTIFY_SOURCE=3 -fstack-protector-strong -fPIE
ifeq ($(SANITIZE),)
OPT := -O2 -g
else
OPT := -O1 -g
HARDEN := -fPIE
endif
CPPFLAGS += -D_GNU_SOURCE -iquote daemon -iquote $(BUILD)/gen -DCAMSKEYD_VERSION='"$(VERSION)"'
CFLAGS   += $(WARN) $(OPT) $(HARDEN) $(SANFLAGS) -pthread $(PKG_CFLAGS) -MMD -MP
LDFLAGS  += -pie -Wl,-z,relro,-z,now -pthread $(SANFLAGS)
LDLIBS   += $(PKG_LIBS) -lm

ifeq ($(V),1)
Q :=
else
Q := @
endif

# The daemon's modules; main.o is linked only into the binary.
LIB_OBJS := mem hex buf span netaddr log cams config lockfile signer verify keyring envelope route cache cache_store cache_mem flight limiter queue engine \
	upstream clients metrics notify http proxy cli redis shared
LIB_O    := $(addprefix $(BUILD)/daemon/,$(addsuffix .o,$(LIB_OBJS)))
MAIN_O   := $(BUILD)/daemon/main.o
LIB_A    := $(BUILD)/libcamskeyd.a

UNIT_TESTS := hex buf span netaddr log config signer verify keyring envelope route cache cache_store cache_mem limiter queue flight engine upstream \
	metrics clients docs redis shared
UNIT_BINS  := $(addprefix $(BUILD)/tests/test_,$(UNIT_TESTS))
SIM        := $(BUILD)/camsim

FUZZ_REPLAY_BINS :=
-include tests/fuzz/fuzz.mk

all: $(BUILD)/camskeyd $(SIM) $(UNIT_BINS) $(FUZZ_REPLAY_BINS)

# make bench's floor: bare libmicrohttpd with camskeyd's flags and header names.
BARE_MHD := $(BUILD)/tests/bench/bare_mhd

$(BARE_MHD): $(BUILD)/tests/bench/bare_mhd.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs libmicrohttpd 2>/dev/null)

$(BUILD)/daemon/%.o: daemon/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) -Itests/unit $(CFLAGS) -c -o $@ $<

# The shared limiter's Lua script, embedded as a byte array (over C's 4095
# bytes of string literal) by awk, so no xxd is needed.
$(BUILD)/gen/redis_limiter_lua.h: daemon/redis_limiter.lua
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  GEN     $@")
	$(Q)LC_ALL=C awk 'BEGIN { for (i = 1; i < 128; i++) ord[sprintf("%c", i)] = i; \
		print "/* generated from daemon/redis_limiter.lua: do not edit */"; \
		print "static const char redis_limiter_lua[] = {" } \
		{ line = "\t"; for (i = 1; i <= length($$0); i++) { c = substr($$0, i, 1); \
		  if (!(c in ord)) { print "non-ASCII byte in line " NR > "/dev/stderr"; exit 1 } \
		  line = line ord[c] ","; if (length(line) > 90) { print line; line = "\t" } } \
		  print line "10," } \
		END { print "\t0\n};" }' $< >$@.tmp && mv $@.tmp $@

$(BUILD)/daemon/redis.o: $(BUILD)/gen/redis_limiter_lua.h

$(LIB_A): $(LIB_O)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/camskeyd: $(MAIN_O) $(LIB_A)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The simulator is the daemon's oracle: it links no daemon object and is
# compiled without daemon/ on the include path, so it cannot share a bug.
SIM_OBJS := camsim simsig selftest simutil
SIM_O    := $(addprefix $(BUILD)/tests/sim/,$(addsuffix .o,$(SIM_OBJS)))
SIM_LIBS := $(shell pkg-config --libs libmicrohttpd openssl libcjson 2>/dev/null)

$(BUILD)/tests/sim/%.o: tests/sim/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) -D_GNU_SOURCE -iquote tests/sim $(CFLAGS) -c -o $@ $<

$(SIM): $(SIM_O)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(SIM_LIBS)

$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $(LIB_A)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- packages -------------------------------------------------------------

# What building needs (the demo needs no more, plus curl for its banner's
# command); what the tests need on top; what `make deb` needs on top of the
# build. The packaging tools are in the check set too: 95_package.py builds
# the .deb in about 20 s, cheap enough to run in every `make check`.
BUILD_PKGS := build-essential pkg-config libmicrohttpd-dev libcurl4-openssl-dev libssl-dev \
	libcjson-dev libsqlite3-dev libhiredis-dev
DEMO_PKGS  := $(BUILD_PKGS) python3 curl ca-certificates
PACKAGING_PKGS := dpkg-dev debhelper lintian fakeroot
CHECK_PKGS := $(DEMO_PKGS) sqlite3 valgrind openssl systemd redis-server $(PACKAGING_PKGS)
DEB_PKGS   := $(CHECK_PKGS)
BENCH_PKGS := nginx-light wrk
FUZZ_PKGS := clang libclang-rt-14-dev

# The official Node SDK as a test client (tests/sdk/call.js): npm ci from the
# npm registry only, when node_modules is missing or older than the lock file.
SDK_DIR   := tests/sdk
SDK_STAMP := $(SDK_DIR)/node_modules/.package-lock.json

deps:
	@tests/install-deps.sh $(CHECK_PKGS)
	@$(MAKE) --no-print-directory sdk-deps

deps-demo:
	@tests/install-deps.sh $(DEMO_PKGS)

sdk-deps: $(SDK_STAMP)

$(SDK_STAMP): $(SDK_DIR)/package.json $(SDK_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || tests/install-deps.sh nodejs npm
	@$(if $(Q),echo "  NPM     $(SDK_DIR) (npm ci)")
	$(Q)cd $(SDK_DIR) && npm ci --no-audit --no-fund \
		--loglevel=error >/dev/null
	$(Q)touch $@

deps-bench:
	@tests/install-deps.sh $(CHECK_PKGS) $(BENCH_PKGS)

# ---- running ----------------------------------------------------------------

demo: deps-demo
	@$(MAKE) --no-print-directory all
	@tests/demo.sh $(BUILD)

check: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory lint
	@BUILD=$(BUILD) tests/run-tests.sh

unit: all
	@BUILD=$(BUILD) tests/run-tests.sh --unit-only

bench-quota: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) python3 tests/bench/bench_quota.py

soak: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) python3 tests/soak.py

bench: deps-bench
	@$(MAKE) --no-print-directory all $(BARE_MHD)
	@BUILD=$(BUILD) python3 tests/bench/bench_hit.py

# Forbidden calls (see docs/STYLE notes): strcpy, strcat, sprintf, strtok, atoi, sscanf, gets.
lint:
	@! grep -nE '\b(strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|sscanf|gets)\s*\(' \
		daemon/*.c tests/sim/*.c || (echo "lint: forbidden call above" && false)
	@echo "lint: ok"

# ---- install ----------------------------------------------------------------

install: $(BUILD)/camskeyd
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(SYSCONFDIR)/camskeyd $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BUILD)/camskeyd $(DESTDIR)$(SBINDIR)/camskeyd
	install -m 0644 docs/camskeyd.8 $(DESTDIR)$(MANDIR)/man8/camskeyd.8
	install -m 0644 docs/camskeyd.conf.5 $(DESTDIR)$(MANDIR)/man5/camskeyd.conf.5
	sed -e 's|/usr/sbin/camskeyd|$(SBINDIR)/camskeyd|g' -e 's|/etc/camskeyd/|$(SYSCONFDIR)/camskeyd/|g' \
		systemd/camskeyd.service >$(DESTDIR)$(UNITDIR)/camskeyd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/camskeyd.service
	install -m 0644 systemd/camskeyd.socket $(DESTDIR)$(UNITDIR)/camskeyd.socket
	test -e $(DESTDIR)$(SYSCONFDIR)/camskeyd/camskeyd.conf || \
		install -m 0644 config/camskeyd.conf $(DESTDIR)$(SYSCONFDIR)/camskeyd/camskeyd.conf

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/camskeyd $(DESTDIR)$(MANDIR)/man8/camskeyd.8 \
		$(DESTDIR)$(MANDIR)/man5/camskeyd.conf.5 $(DESTDIR)$(UNITDIR)/camskeyd.service \
		$(DESTDIR)$(UNITDIR)/camskeyd.socket
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/camskeyd/camskeyd.conf (remove it by hand if unwanted)"

# ---- Debian package -----------------------------------------------------------
# dpkg-buildpackage writes into the parent of the tree it builds, so it
# builds a copy in build/deb/camskeyd-VERSION/ and the results land in
# build/deb/; the .deb is then moved to build/. lintian fails the target on
# errors; the one tag kept (info level) is explained in
# debian/camskeyd.lintian-overrides.
DEB_ARCH = $(shell dpkg --print-architecture 2>/dev/null)
DEB_FILE = build/camskeyd_$(VERSION)_$(DEB_ARCH).deb
DEB_TREE := build/deb/camskeyd-$(VERSION)

deb:
	@tests/install-deps.sh $(BUILD_PKGS) $(PACKAGING_PKGS)
	@test "$$(sed -n '1s/^camskeyd (\([^)]*\)).*/\1/p' debian/changelog)" = "$(VERSION)" || \
		{ echo "deb: debian/changelog's version is not VERSION=$(VERSION)"; false; }
	$(Q)rm -rf build/deb && mkdir -p $(DEB_TREE)
	$(Q)tar -cf - --exclude=./build --exclude=./.git --exclude=./tests/sdk/node_modules \
		--exclude='*.db' --exclude=__pycache__ . | tar -xf - -C $(DEB_TREE)
	@$(if $(Q),echo "  DEB     $(DEB_FILE) (log build/deb/build.log)")
	$(Q)cd $(DEB_TREE) && dpkg-buildpackage -b -us -uc >../build.log 2>&1 || \
		{ tail -n 40 ../build.log; false; }
	$(Q)mv build/deb/camskeyd_$(VERSION)_$(DEB_ARCH).deb $(DEB_FILE)
	@echo "deb: $(DEB_FILE)"
	$(Q)lintian --info $(DEB_FILE); rc=$$?; [ $$rc = 0 ] && echo "lintian: no errors"; exit $$rc

clean:
	rm -rf build

.SECONDARY:

.PHONY: all deps deps-demo sdk-deps deps-bench deb demo check unit bench bench-quota soak lint install uninstall clean

-include $(wildcard $(BUILD)/daemon/*.d $(BUILD)/tests/*/*.d)
