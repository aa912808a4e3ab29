# tests/fuzz/fuzz.mk -- the fuzz targets, included by the Makefile.
#
# Each parser has a target tests/fuzz/fuzz_NAME.c (one LLVMFuzzerTestOneInput)
# that builds two ways:
#
#   $(BUILD)/tests/test_fuzz_NAME   with replay.c and the normal CC/CFLAGS: a
#       plain program replaying tests/fuzz/corpus/NAME/ and
#       tests/fuzz/regressions/NAME/; part of `make all`, run by `make check`
#       (and under ASan/UBSan by `make check SANITIZE=address,undefined`).
#   build/fuzz/fuzz_NAME            with clang's libFuzzer, ASan and UBSan,
#       the daemon modules it needs compiled again by clang into build/fuzz/
#       (gcc's objects are never mixed in); run by `make fuzz`.
#
#   make fuzz                       every target FUZZ_SECONDS (60) seconds
#   make fuzz FUZZ_SECONDS=120 FUZZ_TARGETS="route config"
#   make fuzz-corpus-merge          fold what fuzzing found into the seeds
#
# A crash makes `make fuzz` fail and is copied into tests/fuzz/regressions/
# NAME/, where the replay program then runs it for ever: see README.md.

# Included before the Makefile's first rule: keep `all` the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

FUZZ_TARGETS ?= route config envelope signer verify

# ---- the replay programs (normal compiler and flags) ------------------------

FUZZ_REPLAY   := $(addprefix $(BUILD)/tests/test_fuzz_,$(FUZZ_TARGETS))
FUZZ_REPLAY_O := $(patsubst %,$(BUILD)/tests/fuzz/replay_%.o,$(FUZZ_TARGETS))
FUZZ_REPLAY_BINS += $(FUZZ_REPLAY)

# Static pattern rules only: a plain replay_%.o rule would let make's
# built-in "%: %.o" rule try to "remake" the included replay_NAME.d files.
# fuzz_NAME.o comes from the Makefile's $(BUILD)/tests/%.o rule.
$(FUZZ_REPLAY_O): $(BUILD)/tests/fuzz/replay_%.o: tests/fuzz/replay.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $< ($*)")
	$(Q)$(CC) $(CPPFLAGS) -DFUZZ_NAME='"$*"' $(CFLAGS) -c -o $@ $<

$(FUZZ_REPLAY): $(BUILD)/tests/test_fuzz_%: $(BUILD)/tests/fuzz/replay_%.o \
		$(BUILD)/tests/fuzz/fuzz_%.o $(LIB_A)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- the libFuzzer programs (clang) -------------------------------------------

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
# The modules the targets reach (upstream for upstream_parse_ratelimit).
FUZZ_MODULES := mem buf span config signer verify envelope route upstream
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := $(WARN) -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link -pthread $(PKG_CFLAGS) \
	-MMD -MP
FUZZ_LIB_O   := $(addprefix $(FUZZ_DIR)/daemon/,$(addsuffix .o,$(FUZZ_MODULES)))
FUZZ_LIB_A   := $(FUZZ_DIR)/libcamskeyd-fuzz.a
FUZZ_BINS    := $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))

# The daemon's modules are not ours to keep clang-warning-free: no -Werror.
$(FUZZ_DIR)/daemon/%.o: daemon/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CLANG   $<")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(filter-out -Werror,$(FUZZ_CFLAGS)) -c -o $@ $<

$(FUZZ_DIR)/tests/fuzz_%.o: tests/fuzz/fuzz_%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CLANG   $<")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_LIB_A): $(FUZZ_LIB_O)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(FUZZ_BINS): $(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/tests/fuzz_%.o $(FUZZ_LIB_A)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -pthread -o $@ $^ $(LDLIBS)

fuzz-deps:
	@tests/install-deps.sh $(FUZZ_PKGS)

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-deps
	@$(MAKE) --no-print-directory fuzz-build
	@tests/fuzz/run-fuzz.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-corpus-merge: fuzz-deps
	@$(MAKE) --no-print-directory fuzz-build
	@tests/fuzz/run-fuzz.sh --merge $(FUZZ_DIR) 0 $(FUZZ_TARGETS)

.PHONY: fuzz fuzz-build fuzz-deps fuzz-corpus-merge

-include $(wildcard $(FUZZ_DIR)/*/*.d)
