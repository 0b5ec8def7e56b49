# The two commands a newcomer needs (both install what they need, idempotently):
#   make run    the lab demo; `make run CONFIG=/etc/exfilmon/exfilmon.toml` runs on real interfaces
#   make test   the whole test suite (unit, kernel, end-to-end, lints); exits non-zero on failure
# Both need root: they load eBPF programs and (demo, tests) build network namespaces.

.PHONY: run test bench fuzz setup install

HOLD ?= 0
FUZZ_SECONDS ?= 60

setup:
	@./scripts/setup.sh

run: setup
	cargo xtask run $(if $(CONFIG),--config $(CONFIG),--hold $(HOLD))

test: setup
	cargo xtask test

# Builds the release binary and installs it with its man pages, shell completions, the
# systemd unit (not enabled), rules, dashboard, examples and docs: PREFIX=/usr/local and
# DESTDIR as usual (see scripts/install.sh). Root for the live system.
PREFIX ?= /usr/local
install: setup
	cargo build --release -p monitor
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) ./scripts/install.sh target/release/exfilmon

# The benchmark suite (not a test: it reports ratios, asserts nothing). BENCH_ARGS=--quick
# for a smoke run; results in target/bench/results.json.
bench: setup
	cargo xtask bench -- $(BENCH_ARGS)

# Every cargo-fuzz target (fuzz/) for FUZZ_SECONDS each (default 60), from seeds the tests'
# builders make; `make fuzz FUZZ_SECONDS=600 FUZZ_TARGETS="dns tls"` for a longer run of some.
# Crashing inputs are saved in fuzz/artifacts/TARGET/. No root needed.
fuzz: setup
	cargo xtask fuzz --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)
