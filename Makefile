# Lattice — build, test, run.
GO      ?= go
BIN     ?= bin/lattice
FUZZTIME ?= 5s
# Fuzz targets run by `make test` (package:target), each for $(FUZZTIME).
FUZZ_TARGETS ?= ./crdt:FuzzDecodeCart ./crdt:FuzzDecodeItem ./crdt:FuzzDecodeGroup \
	./crdt:FuzzDecodeCartStored ./crdt:FuzzDecodeItemStored ./crdt:FuzzDecodeGroupReference \
	./crdt:FuzzParseToken ./sync/protocol:FuzzDecodeMessage ./sync/transport:FuzzReadFrame ./sync/transport:FuzzStreamDecoder
# Seeds of the replication simulation run without the race detector by
# `make test` (the race-enabled suite runs 150 of them).
SIM_SEEDS ?= 10000

.PHONY: all build test unit sim fuzz vet lint run bench bench-go clean image compose-test

all: build

# The version and commit `lattice version`, lattice_build_info and the
# benchmark's results.json report.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS ?= -X github.com/latticedb/lattice/cmd/server.version=$(VERSION) -X github.com/latticedb/lattice/cmd/server.commit=$(COMMIT)

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/lattice

vet:
	$(GO) vet ./...

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 -timeout 30m ./...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		PATH="$$(dirname $$(command -v $(GO))):$$PATH" bash .ci/fuzz $$pkg $$name $(FUZZTIME); \
	done

# sim replays SIM_SEEDS seeded histories of the replication protocol over
# a lossy, duplicating, reordering, partitioning network with crashes.
# Replay one: go test ./sync/protocol -run TestSimulation -args -sim.seed=N -v
sim:
	$(GO) test -count=1 -run '^TestSimulation$$' ./sync/protocol -args -sim.seeds=$(SIM_SEEDS)

# test is what CI runs: formatting, vet, the race-enabled test suite, the
# long simulation and a short fuzz pass over every decoder of untrusted
# input.
test: lint fuzz sim unit

# image builds the static binary and the image lattice:dev (deploy/Dockerfile).
image:
	GOOS=linux CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o deploy/lattice ./cmd/lattice
	docker build -t lattice:dev -f deploy/Dockerfile deploy

# compose-test builds the image and runs deploy/compose/compose.yaml: three
# regions of two nodes as six containers; a region cut off with docker
# network disconnect, a node crashed with docker kill, every node
# restarted in turn with docker stop and start under writes (under a
# minute; needs docker and compose, and is part of unit when they are
# there).
compose-test:
	$(GO) test -count=1 -v -run '^TestComposeCluster$$' -timeout 15m ./deploy

run: build
	./$(BIN) dev

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

bench: build bench-go
	./$(BIN) bench

clean:
	rm -rf bin
