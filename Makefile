# The two commands a newcomer needs (both install what they need, idempotently):
#   make run    the lab demo; `make run CONFIG=/etc/exfilmon/exfilmon.toml` runs on real interfaces
#   make test   the whole test suite (unit, kernel, end-to-end, lints); exits non-zero on failure
# Both need root: they load eBPF programs and (demo, tests) build network namespaces.

.PHONY: run test bench setup

HOLD ?= 0

setup:
	@./scripts/setup.sh

run: setup
	cargo xtask run $(if $(CONFIG),--config $(CONFIG),--hold $(HOLD))

test: setup
	cargo xtask test

# The benchmark suite (not a test: it reports ratios, asserts nothing). BENCH_ARGS=--quick
# for a smoke run; results in target/bench/results.json.
bench: setup
	cargo xtask bench -- $(BENCH_ARGS)
