# Lattice — build, test, run.
GO      ?= go
BIN     ?= bin/lattice
FUZZTIME ?= 5s
# Fuzz targets run by `make test` (package:target), each for $(FUZZTIME).
FUZZ_TARGETS ?= ./crdt:FuzzDecodeCart ./crdt:FuzzDecodeItem ./crdt:FuzzDecodeGroup

.PHONY: all build test unit fuzz vet lint run bench bench-go clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/lattice

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
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# test is what CI runs: formatting, vet, the race-enabled test suite and a
# short fuzz pass over every decoder.
test: lint unit fuzz

run: build
	./$(BIN) dev

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

bench: build bench-go
	./$(BIN) bench

clean:
	rm -rf bin
