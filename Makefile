# streamml: plain make, pkg-config for every library, outputs under build/.
#   make            build everything (library, streamml, workers, tests)
#   make test       install missing deps, build, run every test, print the summary
#   make sanitize   the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make demo       embedded broker + Redis + worker on the sample data
#   make bench      benchmarks (figures, never pass/fail)
#   make models     retrain the demo models and regenerate the xgboost fixtures
#   make deps       install the Debian 12 packages (idempotent)

BUILD   ?= build
CC      ?= cc
PKGS    := rdkafka avro-c hiredis jansson openblas libmicrohttpd libcurl libprotobuf-c libpng libjpeg
PY      ?= /usr/bin/python3
VERSION := 0.1.0

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
           -Wno-format-nonliteral -Wno-format-truncation -Werror
OPT     ?= -O2 -g
CFLAGS  += $(OPT) -std=c11 -D_GNU_SOURCE -DSTREAMML_VERSION=\"$(VERSION)\" $(WARN) -MMD -MP \
           -iquote common -iquote tests/support $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread
TESTLIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

COMMON_SRC  := $(sort $(wildcard common/*.c))
COMMON_OBJ  := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o)
LIB         := $(BUILD)/libstreamml.a
CLI_SRC     := $(sort $(wildcard tools/streamml/*.c))
CLI_OBJ     := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
WORKERS     := $(notdir $(wildcard workers/*))
WORKER_BINS := $(WORKERS:%=$(BUILD)/streamml-%)
SUPPORT_SRC := $(sort $(wildcard tests/support/*.c))
SUPPORT_OBJ := $(SUPPORT_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC    := $(sort $(wildcard tests/test_*.c))
TEST_BINS   := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC   := $(sort $(wildcard bench/*.c))
BENCH_BINS  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all test sanitize demo bench models deps deps-check clean lint fixtures
all: $(LIB) $(BUILD)/streamml $(WORKER_BINS) $(TEST_BINS) $(BENCH_BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/streamml: $(CLI_OBJ) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/streamml-%: $(BUILD)/obj/workers/%/main.o $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(SUPPORT_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TESTLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Missing packages are installed only when something is actually missing.
deps-check:
	@tools/deps.sh --check >/dev/null 2>&1 || tools/deps.sh

deps:
	tools/deps.sh

test: deps-check
	$(MAKE) all
	BUILD=$(BUILD) tests/run.sh

sanitize: deps-check
	$(MAKE) BUILD=build/sanitize CC=gcc \
	  OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" all
	BUILD=build/sanitize ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run.sh

demo: deps-check
	$(MAKE) all
	BUILD=$(BUILD) tools/demo.sh

bench: deps-check
	$(MAKE) all
	BUILD=$(BUILD) bench/run.sh

models: all
	$(PY) models/train.py --streamml $(BUILD)/streamml --data ../shared/data/credit_data.csv --out models

lint:
	clang-format --dry-run --Werror common/*.[ch] workers/*/*.c tools/streamml/*.[ch] tests/*.c

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

fixtures:
	$(PY) tests/fixtures/make_xgb_fixtures.py
	$(PY) tests/fixtures/make_registry_fixtures.py
