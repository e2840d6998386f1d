# cutover: one non-recursive Makefile. `make` builds build/cutover; `make test` runs every test;
# `make demo` runs the demonstration; `make fuzz` builds the libFuzzer targets (clang).
# Sources are found by folder, so a new module needs no edit here.

CC      ?= gcc
PKGS    := libuv libfyaml jansson sqlite3 libcurl libssl libcrypto
DEPS_OK := build/.deps-ok

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
           -Wimplicit-fallthrough -Wvla
BASE    := -std=c17 -D_GNU_SOURCE -Isrc $(WARN) -MMD -MP
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS)) -lpthread -lm

CFLAGS_REL  := -O2 -g -D_FORTIFY_SOURCE=2
CFLAGS_SAN  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all

SRC      := $(sort $(shell find src -name '*.c'))
LIB_SRC  := $(filter-out src/main.c,$(SRC))
OBJ      := $(SRC:%.c=build/obj/%.o)
LIB_OBJ  := $(LIB_SRC:%.c=build/obj/%.o)
SAN_OBJ  := $(LIB_SRC:%.c=build/san/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=build/tests/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
# The fuzz targets link only the allocation-free modules they exercise.
FUZZ_LIB := $(sort $(wildcard src/http/*.c) src/core/xmalloc.c src/net/cidr.c src/net/proxyproto.c \
                   src/proxy/hold.c)

.PHONY: all test unit e2e demo fuzz fuzz-run bench clean format format-check deps circles
# The sanitizer objects only feed the unit tests: keep them between runs.
.SECONDARY: $(SAN_OBJ)
all: build/cutover

deps: $(DEPS_OK)
$(DEPS_OK): scripts/deps.sh
	@sh scripts/deps.sh
	@mkdir -p build && touch $@

build/cutover: $(OBJ) | $(DEPS_OK)
	$(CC) -o $@ $(OBJ) $(PKG_LIBS)

build/obj/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(BASE) $(CFLAGS_REL) $(PKG_CFLAGS) -c $< -o $@

build/san/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(BASE) $(CFLAGS_SAN) $(PKG_CFLAGS) -c $< -o $@

build/tests/%: tests/unit/%.c $(SAN_OBJ) | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(BASE) $(CFLAGS_SAN) $(PKG_CFLAGS) $(shell pkg-config --cflags cmocka) -o $@ $< $(SAN_OBJ) \
	    $(PKG_LIBS) $(shell pkg-config --libs cmocka)

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; \
	    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 CUTOVER_TEST_DATA=tests/data $$t; done

# E2E_JOBS pytest-xdist workers (0: one process). Tests marked xdist_group("load") -- wrk and
# timing checks -- all run on one worker, one at a time; see tests/e2e/conftest.py.
E2E_JOBS ?= 3
e2e: build/cutover
	/usr/bin/python3 -m pytest -q -n $(E2E_JOBS) --dist loadgroup tests/e2e

test: format-check build/cutover circles unit e2e

# No two files of a folder call each other in a loop (scripts/circles.py reads the objects).
circles: build/cutover
	/usr/bin/python3 scripts/circles.py build/obj

demo: build/cutover
	build/cutover demo

build/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB) | $(DEPS_OK)
	@mkdir -p $(@D)
	clang $(BASE) -O1 -g -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_LIB)

# The config loader walks a libfyaml document: its target links the loader, the modules it
# calls and libfyaml, apart from the allocation-free parsers above.
FUZZ_CONFIG_LIB := src/config/config.c src/config/freeze.c src/core/duration.c src/core/text.c src/core/xmalloc.c \
                   src/http/vhost.c \
                   src/net/addr.c src/net/cidr.c src/net/tls.c
build/fuzz/fuzz_config: tests/fuzz/fuzz_config.c $(FUZZ_CONFIG_LIB) | $(DEPS_OK)
	@mkdir -p $(@D)
	clang $(BASE) -O1 -g -fsanitize=fuzzer,address,undefined $(shell pkg-config --cflags libfyaml libuv libssl) \
	    -o $@ $< $(FUZZ_CONFIG_LIB) $(shell pkg-config --libs libfyaml libuv libssl libcrypto)

# The TLS hello path runs the real per-connection code over a socketpair: it links net/tls.c,
# libuv and OpenSSL.
FUZZ_TLS_LIB := src/net/tls.c src/core/xmalloc.c
build/fuzz/fuzz_tls_hello: tests/fuzz/fuzz_tls_hello.c $(FUZZ_TLS_LIB) | $(DEPS_OK)
	@mkdir -p $(@D)
	clang $(BASE) -O1 -g -fsanitize=fuzzer,address,undefined $(shell pkg-config --cflags libuv libssl) \
	    -o $@ $< $(FUZZ_TLS_LIB) $(shell pkg-config --libs libuv libssl libcrypto)

fuzz: $(FUZZ_BIN)

# FUZZ_SECONDS per target; the corpus is kept in tests/fuzz/corpus/<target>/.
FUZZ_SECONDS ?= 60
fuzz-run: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); mkdir -p tests/fuzz/corpus/$$n; \
	    echo "== $$n ($(FUZZ_SECONDS)s)"; $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    tests/fuzz/corpus/$$n 2>&1 | tail -n 12; done

bench: build/cutover
	bench/proxy.sh

format:
	clang-format -i $(SRC) $(shell find src -name '*.h') $(UNIT_SRC) $(FUZZ_SRC)

# clang-format 14 is what the house style names (Debian's clang-format package).
format-check:
	@command -v clang-format >/dev/null || { echo "clang-format missing: scripts/deps.sh"; exit 1; }
	clang-format --dry-run --Werror $(SRC) $(shell find src -name '*.h') $(UNIT_SRC) $(FUZZ_SRC)

clean:
	rm -rf build

-include $(OBJ:.o=.d) $(SAN_OBJ:.o=.d)
