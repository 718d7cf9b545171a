# dualgate: the two commands a new user needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/dualgate
CONFIG  ?= configs/dualgate.yaml
FUZZTIME ?= 20s

.PHONY: all build run test unit integration fuzz bench bench-sip bench-http bench-register bench-ws vet clean agent-bundle agent-bundle-check

all: build

build:
	$(GO) build -o $(BIN) ./cmd/dualgate

# Starts the gateway on the development config: SIP on 127.0.0.1:5060 (UDP and TCP).
run:
	$(GO) run ./cmd/dualgate -config $(CONFIG)

# Every test: unit, integration with real sipp peers, the torture corpus, the portals in
# headless Chromium, a check that the committed JsSIP bundle is what its lockfile builds, and a
# short fuzz run.
test: vet test/e2e/node_modules agent-bundle-check
	$(GO) test -race -count=1 ./...
	$(MAKE) fuzz

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed on:"; gofmt -l .; exit 1)

# playwright-core for the browser tests, as locked; runs again only when the lockfile changes.
test/e2e/node_modules: test/e2e/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 20 or later with npm"; exit 1; }
	npm ci --prefix test/e2e --no-audit --no-fund
	@touch $@

# The agent portal's JsSIP bundle, static/agent/vendor/jssip.min.js, built with esbuild from the
# versions static/agent/build/package-lock.json pins (static/agent/build/README.md). It is
# committed, so `make run` and `make build` need only Go: rebuild it after changing the lockfile
# or entry.js, and commit it. agent-bundle-check fails when the committed file is not what a
# fresh build gives.
agent-bundle: static/agent/build/node_modules
	npm run --prefix static/agent/build --silent build

agent-bundle-check: static/agent/build/node_modules
	npm run --prefix static/agent/build --silent check

static/agent/build/node_modules: static/agent/build/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 20 or later with npm"; exit 1; }
	npm ci --prefix static/agent/build --no-audit --no-fund
	@touch $@

# The two hand-written parsers at the edge: inbound SIP and the HTTP fast lane's request head.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzInbound$$' -fuzztime $(FUZZTIME) ./sip/sanity
	$(GO) test -run '^$$' -fuzz '^FuzzParseFastHead$$' -fuzztime $(FUZZTIME) ./web

# Benchmarks (bench/README.md): the SIP call rate beside Kamailio, then the HTTP plane beside
# nginx, then the registrar beside Kamailio's, then 10,000 WebSocket agents. Each runs even when an earlier one fails (not
# when it is interrupted); make fails if any does.
bench: build
	@rc=0; bash bench/sip-bench.sh || rc=$$?; [ $$rc -lt 128 ] || exit $$rc; \
	r=0; GO="$(GO)" bash bench/http-bench.sh || r=$$?; [ $$r -lt 128 ] || exit $$r; [ $$r -eq 0 ] || rc=1; \
	r=0; GO="$(GO)" bash bench/register-bench.sh || r=$$?; [ $$r -lt 128 ] || exit $$r; [ $$r -eq 0 ] || rc=1; \
	r=0; GO="$(GO)" bash bench/ws-bench.sh || r=$$?; [ $$r -lt 128 ] || exit $$r; [ $$r -eq 0 ] || rc=1; \
	exit $$rc

# Call-rate benchmark alone: dualgate and Kamailio (if installed) under the same sipp load.
bench-sip: build
	bash bench/sip-bench.sh

# HTTP benchmark alone: static portal asset and authenticated API call with wrk, beside nginx.
bench-http: build
	GO="$(GO)" bash bench/http-bench.sh

# Registration benchmark alone: REGISTER rate (no auth, digest) and bytes per binding for
# 100,000 users, beside Kamailio's registrar (if installed).
bench-register: build
	GO="$(GO)" bash bench/register-bench.sh

# WebSocket agents benchmark alone: N agents (default 10,000) over WSS register and idle
# (memory per agent), then all reconnect at once (storm time, failures).
bench-ws: build
	GO="$(GO)" bash bench/ws-bench.sh

clean:
	rm -rf bin
