# streamml: plain make, pkg-config for every library, outputs under build/.
#   make            build everything (library, streamml, workers, tests)
#   make test       install missing deps, build, run every test, print the summary
#   make faults     the randomised fault run (Redis faults under load; ~2 min)
#   make sanitize   the tests and the fault run under ASan + UBSan (tests/sanitize.sh)
#   make demo       embedded broker + Redis + worker on the sample data
#   make bench      benchmarks (figures, never pass/fail)
#   make models     retrain the demo models and regenerate the xgboost fixtures
#   make deps       install the Debian 12 packages (idempotent)
#   make image      build the container image (starts a container engine if none runs)
#   make image-test the image's workers against the embedded broker and a host Redis

BUILD   ?= build
CC      ?= cc
PKGS    := rdkafka avro-c hiredis jansson openblas libmicrohttpd libcurl libprotobuf-c libpng libjpeg
# abtest: SHA-256 of the sticky assignment (libssl-dev, already there for libcurl)
PKGS    += libcrypto
# feature specs (issue 17): YAML with line numbers in every error (libyaml-dev)
PKGS    += yaml-0.1
PY      ?= /usr/bin/python3
VERSION := 0.1.0

# common/ is laid out by layer (base, io, codec, state, models, monitor, streams,
# worker, offline); every folder is on the quote include path.
COMMON_IQUOTE := $(patsubst %,-iquote %,$(sort $(wildcard common/*/)))

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
           -Wno-format-nonliteral -Wno-format-truncation -Werror
OPT     ?= -O2 -g
# A missing library is an error naming it, never silently empty flags. Goals that
# install the packages (deps, and test/demo/... which run deps-check first and then
# a sub-make that checks again) or need none (clean) are let through.
PKG_MISSING := $(shell for p in $(PKGS); do pkg-config --exists $$p || echo $$p; done)
ONNX_PROTO  := /usr/include/onnx/onnx.proto
NO_PKG_GOALS := deps deps-check clean test sanitize demo bench image image-test
ifneq ($(PKG_MISSING)$(if $(wildcard $(ONNX_PROTO)),,onnx.proto),)
ifeq ($(filter $(NO_PKG_GOALS),$(MAKECMDGOALS)),)
$(error missing: $(PKG_MISSING) $(if $(wildcard $(ONNX_PROTO)),,$(ONNX_PROTO) (libonnx-dev)) \
  -- pkg-config cannot find these; install the packages of deploy/packages/build.txt \
  and dev.txt: make deps (tools/deps.sh))
endif
endif
CFLAGS  += $(OPT) -std=c11 -D_GNU_SOURCE -DSTREAMML_VERSION=\"$(VERSION)\" $(WARN) -MMD -MP \
           $(COMMON_IQUOTE) -iquote tests/support $(shell pkg-config --cflags $(PKGS))
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lm -lpthread
# cmocka only for the tests (the image builds the programs without it): checked when
# a test is linked.
TESTLIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

COMMON_SRC  := $(sort $(wildcard common/*/*.c))
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
FAULT_BIN   := $(BUILD)/faults/fault_run
BENCH_SRC   := $(sort $(wildcard bench/*.c))
BENCH_BINS  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all test sanitize demo bench models deps deps-check clean lint fixtures faults image \
        image-test
all: $(LIB) $(BUILD)/streamml $(WORKER_BINS) $(TEST_BINS) $(BENCH_BINS) $(FAULT_BIN)

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

# The mock broker wrapper (streamml broker) is not in the library the workers link:
# the CLI has it, and the tests link its object.
MOCKBROKER_OBJ := $(BUILD)/obj/tools/streamml/mockbroker.o
$(BUILD)/obj/tests/%.o: CFLAGS += -iquote tools/streamml
$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(SUPPORT_OBJ) $(MOCKBROKER_OBJ) $(LIB)
	$(if $(TESTLIBS),,$(error missing: cmocka -- pkg-config cannot find it; install libcmocka-dev: make deps))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TESTLIBS)

$(BUILD)/faults/%: $(BUILD)/obj/tests/faults/%.o $(SUPPORT_OBJ) $(LIB)
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

# The randomised fault run (issue 23): >= 100,000 events through the
# transactions worker while Redis is paused, killed, restarted with and
# without its data, out of memory and its clients killed (about 2 minutes;
# FAULT_SEED=N replays a run). Not part of `make test`.
faults: deps-check
	$(MAKE) all
	STREAMML_BUILD=$(BUILD) $(FAULT_BIN)

sanitize: deps-check
	$(MAKE) BUILD=build/sanitize CC=gcc \
	  OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" all
	BUILD=build/sanitize tests/sanitize.sh

demo: deps-check
	$(MAKE) all
	BUILD=$(BUILD) tools/demo.sh

# The container image (Dockerfile); a container engine is started when none answers.
image:
	tools/image_test.sh --build-only

# The image test: build it, run the three workers from it against the embedded broker
# and a host Redis (tools/image_test.sh; .ci/run runs it after make test).
image-test: all
	BUILD=$(BUILD) tools/image_test.sh

bench: deps-check
	$(MAKE) all
	BUILD=$(BUILD) bench/run.sh

models: all
	$(PY) models/train.py --streamml $(BUILD)/streamml --data ../shared/data/credit_data.csv --out models
	$(PY) models/baseline.py --streamml $(BUILD)/streamml --events models/demo_events.jsonl --out models

lint:
	clang-format --dry-run --Werror common/*/*.[ch] workers/*/*.c tools/streamml/*.[ch] tests/*.c

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

fixtures:
	$(PY) tests/fixtures/make_xgb_fixtures.py
	$(PY) tests/fixtures/make_shap_fixtures.py
	$(PY) tests/fixtures/make_advval_fixtures.py
	$(PY) tests/fixtures/make_registry_fixtures.py
	$(PY) tests/fixtures/make_predmon_fixtures.py

# ONNX: protobuf-c code for Debian's onnx.proto (libonnx-dev), generated at build time
# into $(BUILD)/gen/ and archived into libstreamml.a. Only common/onnx*.c include it.
ONNX_GEN   := $(BUILD)/gen/onnx.pb-c.c
ONNX_OBJ   := $(BUILD)/obj/gen/onnx.pb-c.o
CFLAGS     += -I$(BUILD)/gen

$(ONNX_GEN): $(ONNX_PROTO)
	@mkdir -p $(dir $@)
	protoc-c --proto_path=$(dir $(ONNX_PROTO)) --c_out=$(dir $@) $(ONNX_PROTO)

$(BUILD)/gen/onnx.pb-c.h: $(ONNX_GEN)

$(ONNX_OBJ): $(ONNX_GEN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(filter $(BUILD)/obj/common/models/onnx%.o,$(COMMON_OBJ)): | $(BUILD)/gen/onnx.pb-c.h

# "Bring your own data" (docs/features.md): the Grunfeld panel (python3-statsmodels) through
# models/grunfeld/grunfeld-v1.yaml, featurize, python3-xgboost and streamml predict, with the
# spec's features checked against a Python reference, then served live by the transactions
# worker (models/grunfeld/serve.sh: local broker and redis-server); outputs in $(BUILD)/grunfeld/.
.PHONY: example-grunfeld
example-grunfeld: all
	$(PY) models/grunfeld/train.py --streamml $(BUILD)/streamml --out $(BUILD)/grunfeld
	models/grunfeld/serve.sh $(BUILD)

# The built-in feature spec (issue 17): models/txn-v1.yaml and its schema as C strings.
FSPEC_BUILTIN := $(BUILD)/gen/fspec_builtin.h
$(FSPEC_BUILTIN): models/txn-v1.yaml schemas/transaction_event.avsc tools/embed_c.sh
	@mkdir -p $(dir $@)
	tools/embed_c.sh txn_v1_yaml models/txn-v1.yaml txn_v1_avsc schemas/transaction_event.avsc > $@.tmp
	mv $@.tmp $@
$(BUILD)/obj/common/streams/features.o: $(FSPEC_BUILTIN)
$(LIB): $(ONNX_OBJ)

# images worker: retrain the demo CNN (ten epochs, 20-50 minutes; rewrites models/images/ and
# tests/fixtures/images_model_ref.json) and regenerate the image-module fixtures
.PHONY: models-images fixtures-images models-images-quality
models-images:
	$(PY) models/images/train.py --out models/images --fixtures tests/fixtures --epochs 10
# image quality limits and their monitoring baseline from 200 training-distribution images
models-images-quality: $(BUILD)/streamml
	d=$$(mktemp -d) && $(PY) models/images/quality_images.py $$d/img && \
	$(BUILD)/streamml quality --images $$d/img --output models/images/quality.json \
	    --monitor models/images/quality_baseline.json; rc=$$?; rm -r $$d; exit $$rc
fixtures-images:
	$(PY) tests/fixtures/make_image_fixtures.py
	$(PY) tests/fixtures/make_gradcam_fixtures.py
	$(PY) tests/fixtures/make_gradcam_net.py

# Large ONNX models (torchvision, random init) into $(BUILD)/onnx-models, and
# their parity check against torch (tools/onnx_parity.py).
onnx-models:
	$(PY) tools/onnx_parity.py export --out $(BUILD)/onnx-models

onnx-parity: all onnx-models
	$(PY) tools/onnx_parity.py check --dir $(BUILD)/onnx-models --streamml $(BUILD)/streamml

onnx-fixtures:
	$(PY) tests/fixtures/make_onnx_fixtures.py

# The ONNX kernels are written to auto-vectorise (-O3); see ONNX_CLONES.
# onnx_ops_*.c were split out of onnx_ops.c and keep its flags.
$(BUILD)/obj/common/models/onnx_ops.o $(BUILD)/obj/common/models/onnx_nn.o: CFLAGS += -O3 -ffp-contract=fast
$(BUILD)/obj/common/models/onnx_ops_data.o $(BUILD)/obj/common/models/onnx_ops_reduce.o: CFLAGS += -O3 -ffp-contract=fast
# TreeSHAP's passes: -O3 unrolls the per-node vector work (about 15% here)
$(BUILD)/obj/common/models/treeshap.o: CFLAGS += -O3 -ffp-contract=fast

# EfficientNet-B0 speed, streamml vs PyTorch (bench/onnx.sh); figures only.
bench-onnx: all
	BUILD=$(BUILD) bench/onnx.sh

# images pipeline figures (bench/images.sh): per-stage ms/image and images/s end to end
.PHONY: bench-images
bench-images: all
	BUILD=$(BUILD) bench/images.sh

.PHONY: onnx-models onnx-parity onnx-fixtures bench-onnx

# clickstream worker: retrain the committed GRU4Rec (5,000 items, hidden 64; about three
# minutes; rewrites models/clickstream/) and its torch fixtures; the bench model (100,000
# items, hidden 128, random init: speed does not depend on the weights) goes to
# $(BUILD)/clickstream-bench/.
.PHONY: models-clickstream fixtures-clickstream models-clickstream-bench
models-clickstream:
	$(PY) models/clickstream/train.py --out models/clickstream
	$(PY) tests/fixtures/make_click_fixtures.py
fixtures-clickstream:
	$(PY) tests/fixtures/make_click_fixtures.py
# the second-stage ranker (about 90 s): models/clickstream/ranker.onnx from the committed GRU, and
# its fixtures (tests/fixtures/ranker_*)
.PHONY: models-clickstream-ranker
models-clickstream-ranker:
	cd models/clickstream && $(PY) train_ranker.py
models-clickstream-bench:
	$(PY) models/clickstream/train.py --out $(BUILD)/clickstream-bench --items 100000 \
	    --emb 128 --hidden 128 --sessions 2000 --epochs 0
# its ranker (about five minutes on the loaded machine; deterministic): a catalogue of the
# 100,000 items and a ranker trained as the demo's on pools drawn around the next click (the
# random GRU's top misses it), $(BUILD)/clickstream-bench/{catalog.jsonl,ranker.onnx}; their
# cost at pools of 2,000: bench/ranker.sh
.PHONY: models-clickstream-bench-ranker
models-clickstream-bench-ranker:
	[ -s $(BUILD)/clickstream-bench/gru4rec.onnx ] || $(MAKE) models-clickstream-bench
	cd models/clickstream && $(PY) make_catalog.py --items 100000 --new 1000 \
	    --out $(abspath $(BUILD))/clickstream-bench/catalog.jsonl
	cd models/clickstream && $(PY) train_ranker.py --sessions 800 --sampled \
	    --model $(abspath $(BUILD))/clickstream-bench/gru4rec.onnx \
	    --catalog $(abspath $(BUILD))/clickstream-bench/catalog.jsonl \
	    --heldout $(abspath $(BUILD))/clickstream-bench/sessions_heldout.jsonl \
	    --out $(abspath $(BUILD))/clickstream-bench --fixtures "" --name ranker_bench

# IVF benchmark (bench/clickstream.sh): the same 100,000 items / hidden 128, trained for two
# minutes with a sampled softmax (about four minutes in all), so that approximate search
# recall is measured on item vectors with structure; $(BUILD)/clickstream-bench-trained/.
.PHONY: models-clickstream-bench-trained
models-clickstream-bench-trained:
	cd models/clickstream && $(PY) train_large.py --out $(abspath $(BUILD))/clickstream-bench-trained

# champion/challenger: reference values of tests/test_abtest.c (hashlib, scipy, sklearn;
# deterministic)
.PHONY: fixtures-abtest
fixtures-abtest:
	$(PY) tests/fixtures/make_abtest_fixtures.py

# ---- reliability: libFuzzer targets (tests/fuzz/fuzz_*.c), clang installed on demand ----
#   make fuzz [FUZZ_SECONDS=30]   each target runs FUZZ_SECONDS under ASan+UBSan
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := $(notdir $(basename $(wildcard tests/fuzz/fuzz_*.c)))
.PHONY: fuzz
fuzz: deps-check
	@command -v clang >/dev/null 2>&1 || tools/deps.sh --fuzz
	$(MAKE) BUILD=build/fuzz CC=clang WARN="-Wall -Wextra" \
	  OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
	  build/fuzz/libstreamml.a
	tools/fuzz.sh build/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# ---- reliability: objects depend on the compiler and its flags ----
# $(BUILD)/flags holds "$(CC) $(CFLAGS)"; it is rewritten only when that text changes
# (make fuzz/sanitize with other OPT or WARN, a new pkg-config path), and every object
# depends on it, so no object built with stale flags survives in a build directory.
# Listing the objects as targets also keeps make from deleting them as intermediates.
FLAGS_STAMP := $(BUILD)/flags
ALL_OBJ     := $(COMMON_OBJ) $(ONNX_OBJ) $(CLI_OBJ) $(SUPPORT_OBJ) \
               $(TEST_SRC:%.c=$(BUILD)/obj/%.o) $(BENCH_SRC:%.c=$(BUILD)/obj/%.o) \
               $(WORKERS:%=$(BUILD)/obj/workers/%/main.o)
.PHONY: flags-stamp-force
$(FLAGS_STAMP): flags-stamp-force
	@mkdir -p $(dir $@)
	@printf '%s\n' '$(CC) $(CFLAGS)' | cmp -s - $@ || printf '%s\n' '$(CC) $(CFLAGS)' > $@
$(ALL_OBJ): $(FLAGS_STAMP)
