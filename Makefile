# Leaky Tokens. `make run` runs every service on embedded defaults; `make test` installs and
# starts what the tests need (Redis, a Redis Cluster, PostgreSQL, a Consul agent), runs every test with the race detector, and
# stops what it started.
GO          ?= go
BIN         := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run build test test-cold bench lint deps clean

build:
	$(GO) build -o $(BIN)/leaky ./cmd/leaky

run: build
	$(BIN)/leaky dev

test:
	bash scripts/test.sh

# The test suite from a fresh clone of HEAD with an empty build cache and a CPU hog per core,
# RUNS times (default 3).
test-cold:
	bash scripts/cold-test.sh

bench:
	bash scripts/bench.sh

deps:
	bash scripts/deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf $(BIN)
