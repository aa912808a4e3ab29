# camskeyd -- build, deps, demo, check, bench, install.
#
#   make            build build/camskeyd, the simulator and the unit tests
#   make demo       install missing packages, build, run daemon + simulator
#   make check      install missing packages, build, lint, run every test
#   make check SANITIZE=address,undefined   the same under ASan/UBSan
#   V=1             show the commands

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
PKGS    := libmicrohttpd libcurl openssl libcjson sqlite3
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
CPPFLAGS += -D_GNU_SOURCE -iquote daemon
CFLAGS   += $(WARN) $(OPT) $(HARDEN) $(SANFLAGS) -pthread $(PKG_CFLAGS) -MMD -MP
LDFLAGS  += -pie -Wl,-z,relro,-z,now -pthread $(SANFLAGS)
LDLIBS   += $(PKG_LIBS) -lm

ifeq ($(V),1)
Q :=
else
Q := @
endif

# The daemon's modules; main.o is linked only into the binary.
LIB_OBJS := mem hex buf span netaddr log cams config signer verify envelope route cache cache_store cache_mem flight limiter queue engine \
	upstream clients metrics notify http proxy cli
LIB_O    := $(addprefix $(BUILD)/daemon/,$(addsuffix .o,$(LIB_OBJS)))
MAIN_O   := $(BUILD)/daemon/main.o
LIB_A    := $(BUILD)/libcamskeyd.a

UNIT_TESTS := hex buf span netaddr log config signer verify envelope route cache cache_store cache_mem limiter queue flight engine upstream \
	metrics clients docs
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

DEB_PKGS := build-essential pkg-config libmicrohttpd-dev libcurl4-openssl-dev libssl-dev \
	libcjson-dev libsqlite3-dev python3 curl sqlite3 ca-certificates valgrind openssl \
	systemd
BENCH_PKGS := nginx-light wrk
FUZZ_PKGS := clang libclang-rt-14-dev

# The official Node SDK as a test client (tests/sdk/call.js): npm ci from the
# npm registry only, when node_modules is missing or older than the lock file.
SDK_DIR   := tests/sdk
SDK_STAMP := $(SDK_DIR)/node_modules/.package-lock.json

deps:
	@tests/install-deps.sh $(DEB_PKGS)
	@$(MAKE) --no-print-directory sdk-deps

sdk-deps: $(SDK_STAMP)

$(SDK_STAMP): $(SDK_DIR)/package.json $(SDK_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || tests/install-deps.sh nodejs npm
	@$(if $(Q),echo "  NPM     $(SDK_DIR) (npm ci)")
	$(Q)cd $(SDK_DIR) && npm ci --no-audit --no-fund --registry=https://registry.npmjs.org/ \
		--loglevel=error >/dev/null
	$(Q)touch $@

deps-bench:
	@tests/install-deps.sh $(DEB_PKGS) $(BENCH_PKGS)

# ---- running ----------------------------------------------------------------

demo: deps
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
	install -m 0644 systemd/camskeyd.service $(DESTDIR)$(UNITDIR)/camskeyd.service
	install -m 0644 systemd/camskeyd.socket $(DESTDIR)$(UNITDIR)/camskeyd.socket
	test -e $(DESTDIR)$(SYSCONFDIR)/camskeyd/camskeyd.conf || \
		install -m 0644 config/camskeyd.conf $(DESTDIR)$(SYSCONFDIR)/camskeyd/camskeyd.conf

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/camskeyd $(DESTDIR)$(MANDIR)/man8/camskeyd.8 \
		$(DESTDIR)$(MANDIR)/man5/camskeyd.conf.5 $(DESTDIR)$(UNITDIR)/camskeyd.service \
		$(DESTDIR)$(UNITDIR)/camskeyd.socket
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/camskeyd/camskeyd.conf (remove it by hand if unwanted)"

clean:
	rm -rf build

.SECONDARY:

.PHONY: all deps sdk-deps deps-bench demo check unit bench bench-quota soak lint install uninstall clean

-include $(wildcard $(BUILD)/daemon/*.d $(BUILD)/tests/*/*.d)
