# dualgate: the two commands a new user needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/dualgate
CONFIG  ?= configs/dualgate.yaml
FUZZTIME ?= 20s

.PHONY: all build run test unit integration fuzz bench vet clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/dualgate

# Starts the gateway on the development config: SIP on 127.0.0.1:5060 (UDP and TCP).
run:
	$(GO) run ./cmd/dualgate -config $(CONFIG)

# Every test: unit, integration with real sipp peers, the torture corpus, and a short fuzz run.
test: vet
	$(GO) test -race -count=1 ./...
	$(MAKE) fuzz

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed on:"; gofmt -l .; exit 1)

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzInbound$$' -fuzztime $(FUZZTIME) ./sip/sanity

# Call-rate benchmark: dualgate and Kamailio (if installed) under the same sipp load.
bench: build
	bash bench/sip-bench.sh

clean:
	rm -rf bin
