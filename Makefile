# Weir's two commands: `make demo` runs the demo, `make test` runs every test.
# Both install what is missing first (scripts/setup.sh), then build.

CARGO ?= cargo
WASM_PACKAGES := weir-policy weir-filter

export WEIR_ENVOY := $(CURDIR)/.tools/bin/envoy
export WEIR_FILTER_WASM := $(CURDIR)/dist/weir_filter.wasm

.PHONY: all setup build wasm server simulator package test lint unit e2e demo bench fuzz clean bench-xds bench-otlp bench-overload bench-ha bench-cost bench-segments

all: build

setup:
	@scripts/setup.sh all

## build: the filter at dist/weir_filter.wasm, the server at dist/weir and
## the dashboard's policy simulator in dist/simulator/.
build: setup wasm server simulator

wasm:
	@echo "build: weir_filter.wasm (wasm32-unknown-unknown)"
	@scripts/build-filter.sh $(WASM_PACKAGES)

simulator:
	@echo "build: dist/simulator (the policy crate for the browser, wasm-bindgen)"
	@scripts/build-simulator.sh

## dist/weir is stripped; its line tables are kept beside it in
## dist/weir.debug (linked by .gnu_debuglink, so gdb and perf find them).
server:
	@echo "build: weir"
	@$(CARGO) build --locked --release -p weir
	@mkdir -p dist
	@if command -v objcopy >/dev/null; then \
		objcopy --only-keep-debug target/release/weir dist/weir.debug && \
		objcopy --strip-all --add-gnu-debuglink=dist/weir.debug target/release/weir dist/weir.tmp && \
		mv dist/weir.tmp dist/weir; \
	else \
		echo "build: objcopy not found; dist/weir keeps its debug information"; \
		cp target/release/weir dist/weir; \
	fi

## test: formatting, lints, the wasm32 build of policy/ and filter/, then
## every unit, integration and end-to-end test (real Envoy, real backends),
## then every fuzz target for a few seconds from its seeds and past crashes.
## The packages (make package) are built first: their tests use them.
test: build lint package
	@scripts/run-tests.sh
	@FUZZ_PROFILE=dev FUZZ_SECONDS=3 FUZZ_FRESH=1 scripts/fuzz.sh

## package: what operators install from (docs/install.md), into the OCI
## layout dist/oci, built without a daemon (buildah): weir-filter:VERSION,
## the filter as Istio and Envoy Gateway pull it, and weir:VERSION.
package: build
	@scripts/setup.sh packaging
	@scripts/package.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

## demo: the full scenario (docs/demo.md): weir, Envoy and backends in three
## regions; weir promotes one canary and rolls two back by itself, and an
## overload sheds heartbeats, not alarms. Then everything stays up for
## exploring (the dashboard is printed) until Ctrl-C; DEMO_SECONDS=N stops it
## N seconds after the scenario (0: right after), for unattended runs.
demo: build
	@$(CARGO) run --locked --quiet --release -p weir-demo $(if $(DEMO_SECONDS),-- --seconds $(DEMO_SECONDS))

## fuzz: every fuzz target (fuzz/: the policy YAML, the filter's configuration,
## OTLP protobuf and JSON, ADS streams, the per-request path) under libFuzzer
## on the nightly toolchain, for FUZZ_RUNS inputs each (default 10,000,000;
## FUZZ_SECONDS=S for a time instead, FUZZ_JOBS=2 for two at once); writes its
## section of bench/RESULTS.md. A crash's input lands in fuzz/regressions/.
fuzz:
	@scripts/fuzz.sh

## bench: Envoy's CPU per request and latency without a filter, with a
## do-nothing wasm filter, Weir's, a one-line Lua filter and native
## weighted_clusters, and the wasm VM's memory; writes bench/RESULTS.md.
bench: build
	@echo "build: weir_noop_filter.wasm (wasm32-unknown-unknown)"
	@scripts/build-filter.sh weir-noop-filter
	@$(CARGO) run --locked --release -p weir-bench -- --out bench/RESULTS.md
	@$(MAKE) --no-print-directory bench-cost
	@$(MAKE) --no-print-directory bench-xds
	@$(MAKE) --no-print-directory bench-otlp
	@$(MAKE) --no-print-directory bench-overload
	@$(MAKE) --no-print-directory bench-ha
	@$(MAKE) --no-print-directory bench-segments

## bench-cost: instructions Envoy executes per request with no filter, the
## do-nothing module (as built, and pruned to Weir's callbacks), Weir's filter
## and Lua, counted by valgrind's callgrind (steady from run to run, unlike
## time on a shared machine); writes its section of bench/RESULTS.md.
bench-cost: build
	@scripts/setup.sh valgrind
	@echo "build: weir_noop_filter.wasm (wasm32-unknown-unknown)"
	@scripts/build-filter.sh weir-noop-filter
	@$(CARGO) run --locked --release -p weir-bench -- --instructions --out bench/RESULTS.md

## bench-xds: the control plane: policy edit to Envoy's ACK (50 edits), and
## 1,000, 10,000 and 50,000 ADS streams of a load client (time until all ACK
## a change, weir's memory), and 10,000 shared by three replicas on etcd;
## writes its section of bench/RESULTS.md. 100 streams share each HTTP/2
## connection, so few files are open; the limit is raised anyway.
bench-xds: build
	@scripts/setup.sh etcd
	@ulimit -n 65536 2>/dev/null || true; \
	$(CARGO) run --locked --release -p weir-xds-bench -- --out bench/RESULTS.md

## bench-otlp: OTLP ingestion in data points/s (decode-only, in-process,
## gRPC and HTTP to weir serve, interleaved rounds), and the reaction time
## from a failing canary's first bad response to Envoy's configuration at
## weight 0 (20 runs with a real Envoy); writes its section of bench/RESULTS.md.
bench-otlp: build
	@$(CARGO) run --locked --release -p weir-otlp-bench -- --out bench/RESULTS.md

## bench-segments: detection time of a canary failing one device segment
## only (cameras), first bad response to Envoy's configuration at weight 0,
## beside a whole-cluster failure, 20 runs each with a real Envoy; writes its
## section of bench/RESULTS.md.
bench-segments: build
	@$(CARGO) run --locked --release -p weir-otlp-bench -- --segments --out bench/RESULTS.md

## bench-overload: priority admission under overload: one backend of fixed
## capacity behind Envoy with no admission, its circuit breaker,
## admission_control, adaptive_concurrency and Weir's filter, device traffic
## at 0.1x to 10x the capacity; per class offered, served, shed, p50/p99,
## goodput, and Weir's targets; writes its section of bench/RESULTS.md.
bench-overload: build
	@$(CARGO) run --locked --release -p weir-overload-bench -- --out bench/RESULTS.md

## bench-ha: replicas on etcd: leader failover times (SIGKILL → a new
## leader deciding, → its Envoys served) and etcd's load per second and per
## decision.
bench-ha: build
	@scripts/setup.sh etcd
	@$(CARGO) run --locked --release -p weir-ha-bench -- --out bench/RESULTS.md

clean:
	rm -rf target dist
