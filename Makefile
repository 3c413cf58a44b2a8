# The two commands a newcomer runs on a fresh Debian machine with Swift: `make demo` and
# `make test`. Both install missing system packages first (scripts/ensure-deps.sh) and build.

SWIFT ?= swift

.PHONY: demo test build deps format lint clean

demo: deps
	$(SWIFT) build
	scripts/demo.sh

test: deps lint
	$(SWIFT) build --build-tests
	$(SWIFT) test

build: deps
	$(SWIFT) build

deps:
	@scripts/ensure-deps.sh

format:
	$(SWIFT) format -i -r Sources Tests Package.swift

lint:
	$(SWIFT) format lint --strict -r Sources Tests Package.swift

clean:
	rm -rf .build .custos
