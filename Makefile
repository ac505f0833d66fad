# agora's front door. `make run` and `make test` do everything on a fresh Debian machine.
.PHONY: all bootstrap build debug run test bench bench-soak fuzz fmt lint tsan clean help
SHELL := /bin/bash
JOBS ?= $(shell nproc)
WERROR := $(if $(CI),ON,OFF)
FUZZ_SECONDS ?= 60

all: build

help:
	@echo "make run | test | build | bench | bench-<name> | fuzz | tsan | fmt | lint | clean"

bootstrap:
	@bash scripts/bootstrap.sh

build: bootstrap
	@cmake --preset release -DAG_WERROR=$(WERROR) >/dev/null
	@cmake --build --preset release -j $(JOBS)
	@echo "built build/release/agora"

debug: bootstrap
	@cmake --preset debug -DAG_WERROR=$(WERROR) >/dev/null
	@cmake --build --preset debug -j $(JOBS)

run: build
	./build/release/agora run $(ARGS)

# npm packages the tests use (@redocly/cli, ajv, jose), installed once before ctest
node_modules/.package-lock.json: package.json package-lock.json
	@npm ci --no-audit --no-fund --loglevel=error

test: debug node_modules/.package-lock.json
	@cd build/debug && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

tsan: bootstrap
	@bash scripts/tsan.sh resil store es saga

bench: build
	@for s in bench/*/run.sh; do bash "$$s" || exit 1; done

# the soak is long (1M orders by default) and not part of `make bench`
bench-soak: build
	@bash bench/soak/soak.sh

# bench-<name>: bench/<name>/run.sh, e.g. bench-cluster (agora run vs agora cluster up
# with 1 and 2 instances per context, through the gateway)
bench-%: build
	@bash bench/$*/run.sh

fuzz: bootstrap
	@cmake --preset fuzz >/dev/null
	@cmake --build --preset fuzz -j $(JOBS)
	@for f in build/fuzz/fuzz_*; do n=$${f##*/fuzz_}; mkdir -p build/fuzz/corpus-$$n; \
	  echo "fuzzing $$n for $(FUZZ_SECONDS)s (new inputs in build/fuzz/corpus-$$n)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build/fuzz/ \
	    build/fuzz/corpus-$$n fuzz/corpus/$$n || exit 1; done

fmt:
	@clang-format -i $$(git ls-files '*.c' '*.h')

# clang-format check + clang-tidy (a function over 8 parameters fails); scripts/lint.sh
lint:
	@bash scripts/lint.sh

clean:
	rm -rf build
