# modgate — the two commands that matter: `make run` and `make test`.

GO      ?= go
BIN     := bin/modgate
PKGS    := ./...
# Flags for `make run`, e.g. make run ARGS='--config modgate.yaml'
ARGS    ?=

.PHONY: help build run test deps screenshots chaos soak s3-server toxiproxy peers generate check-generated vet lint fmt-check fuzz bench bench-deps clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/modgate
	$(GO) build -o $(BIN) ./cmd/modgate

run: build ## build and start the standalone gateway on 127.0.0.1:8080 (defaults from go env)
	./$(BIN) serve $(ARGS)

test: deps fmt-check vet lint check-generated ## install what the tests need, then run every test (what CI runs)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

# What the tests need beyond Go modules: clang, llvm and libbpf's headers to
# regenerate the eBPF objects, iproute2 for the namespace tests, git for the
# VCS origin's tests (a real Git server, git http-backend), Debian's
# chromium for the console's browser tests (headless). Installed when
# missing and we are root (as CI is). Then a real S3 server (versitygw),
# built once from its Go module into ~/.cache/modgate-test/bin and reused.
# (NATS needs nothing: the tests embed the real nats-server.)
deps: s3-server toxiproxy
	@if ! command -v clang >/dev/null || ! command -v llvm-strip >/dev/null || ! test -f /usr/include/bpf/bpf_helpers.h || ! command -v ip >/dev/null || ! command -v git >/dev/null || ! command -v chromium >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang llvm libbpf-dev iproute2 git chromium; \
		else echo "not root: clang, llvm, libbpf-dev, iproute2, git or chromium missing; the tests that need them will skip"; fi; \
	fi

# The real S3 server of the tests (versitygw), built once from its Go module.
s3-server:
	@GO=$(GO) bash integration/s3server/build.sh

# Toxiproxy, the fault-injecting TCP proxy of the fault matrix (TestChaos…),
# built once from its Go module into ~/.cache/modgate-test/bin.
toxiproxy:
	@GO=$(GO) bash integration/toxiproxy/build.sh

# Athens and goproxy, built once from their Go modules, for
# BenchmarkVsPeers (make bench); it skips a peer that failed to build.
peers:
	-@GO=$(GO) bash integration/peers/build.sh

BPF2GO_CFLAGS := -O2 -g -Wall -Werror -I/usr/include/$(shell uname -m)-linux-gnu

generate: ## regenerate bpf/redirect_bpfel.{go,o} from bpf/redirect.c (needs clang)
	cd bpf && BPF2GO_CFLAGS="$(BPF2GO_CFLAGS)" $(GO) generate ./...

# CI regenerates the eBPF objects and fails if they differ from the
# committed ones.
check-generated:
	@if ! command -v clang >/dev/null; then echo "check-generated: no clang, skipped"; exit 0; fi; \
	$(MAKE) --no-print-directory generate && \
	git diff --exit-code -- bpf/redirect_bpfel.go bpf/redirect_bpfel.o || { echo "bpf/: the generated files differ from the committed ones: run make generate and commit them"; exit 1; }

vet:
	$(GO) vet $(PKGS)

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) run $(STATICCHECK) $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# The console's pages, as the browser tests see them, for the README.
screenshots: deps ## write the web console's screenshots to docs/screenshots/
	MODGATE_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run 'TestConsole$$' -v ./integration

# The fault matrix, long version (make test runs each row for seconds).
chaos: deps ## inject each fault of the matrix during load and print what it cost (about 11 minutes; writes docs/chaos.md)
	CHAOS=long MODGATE_CHAOS_TABLE=$(CURDIR)/docs/chaos.md $(GO) test -count=1 -run 'TestChaos' -timeout 25m -v ./integration

# An hour-scale mixed load, checked for flatness and plotted; SOAK=30m.
soak: deps bench-deps ## hold a mixed load for SOAK (default 10m), check nothing grows or is lost, plot it to docs/soak.png
	SOAK=$(or $(SOAK),10m) MODGATE_SOAK_OUT=$(CURDIR)/docs $(GO) test -count=1 -run 'TestSoak$$' -timeout 0 -v ./integration

fuzz: ## fuzz the request grammar for FUZZTIME (default 60s)
	$(GO) test ./goproxy -run '^$$' -fuzz FuzzParse -fuzztime $(or $(FUZZTIME),60s)

bench: bench-deps s3-server peers ## run the benchmarks (req/s, latency percentiles, CPU per request, modgate vs nginx)
	$(GO) test -run '^$$' -bench . -benchmem -count=1 $$($(GO) list ./... | grep -v /integration)
	$(GO) test -run '^$$' -bench 'VsNginx|VCSDownload' -count=1 -timeout 30m ./integration
	$(GO) test -run '^$$' -bench 'Replicas|BenchmarkCheck' -benchtime=1x -count=1 -timeout 10m ./integration
	$(GO) test -run '^$$' -bench 'VsPeers|ColdDownload' -benchtime=1x -count=1 -timeout 15m ./integration

# nginx (the yardstick) and wrk (the load generator) for BenchmarkVsNginx.
bench-deps:
	@if ! command -v wrk >/dev/null || ! { command -v nginx >/dev/null || test -x /usr/sbin/nginx; }; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light wrk \
			|| DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx wrk; \
		else echo "BenchmarkVsNginx needs nginx and wrk (apt-get install nginx-light wrk); it will skip"; fi; \
	fi

clean: ## remove build output
	rm -rf bin
