# ofa: two commands on a fresh Debian/Ubuntu machine with Rust and Python 3.
#   make demo   the main job on the shipped package checkpoints/fashion-mnist (installs what it needs first)
#   make test   the whole test suite (installs what it needs first)
SHELL := /bin/bash
CARGO ?= cargo
OFA := target/release/ofa
DEMO := target/demo
REFDATA ?= ../shared/reference-data

.PHONY: setup build test test-torchrun demo demo-reference bench bench-ranks bench-data fmt lint clean

setup:  ## libtorch 2.11.0 (project-local, from the PyPI wheel) and Fashion-MNIST; idempotent
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# --no-fail-fast: every test binary runs even after one fails, so one failure never hides others.
test: setup
	$(CARGO) test --workspace --locked --no-fail-fast

PACKAGE ?= checkpoints/fashion-mnist

demo: build  ## serve checkpoints/fashion-mnist, ask over HTTP, cut offline, measure; PACKAGE=DIR for another
	@PACKAGE=$(PACKAGE) bash scripts/demo.sh

# The earlier tour of the file formats: import a reference checkpoint, cut a subnet, run it.
demo-reference: build
	@mkdir -p $(DEMO)-reference
	$(OFA) import tests/fixtures/ofa-tiny/supernet_legacy_naming.pth --out $(DEMO)-reference/supernet.safetensors
	$(OFA) inspect $(DEMO)-reference/supernet.safetensors
	@echo '{"ks":[7,3,7,5,5,3,7,7,3,7,3,5,5,7,3,5,5,3,5,3],"e":[3,3,4,6,4,3,4,4,3,6,4,4,3,3,4,4,4,3,3,6],"d":[4,4,3,4,3],"r":44}' > $(DEMO)-reference/arch.json
	$(OFA) extract --supernet $(DEMO)-reference/supernet.safetensors --arch $(DEMO)-reference/arch.json --out $(DEMO)-reference/subnet.safetensors --net-config $(DEMO)-reference/net.config.json
	$(OFA) infer --model $(DEMO)-reference/subnet.safetensors --input tests/fixtures/ofa-tiny/io_3.safetensors --out $(DEMO)-reference/logits.safetensors

BENCH_PACKAGE ?= checkpoints/fashion-mnist

bench: build
	$(OFA) bench extract --space ofa-mbv3-w1.0
	$(OFA) bench predict
	$(OFA) bench search
	@command -v wrk >/dev/null || { echo "[bench] installing wrk (the HTTP load generator)"; \
	  apt-get update -qq && apt-get install -y -qq wrk; }
	@if [ -d $(BENCH_PACKAGE) ]; then $(OFA) bench serve --package $(BENCH_PACKAGE); \
	else echo "== (bench serve skipped: no package at $(BENCH_PACKAGE); set BENCH_PACKAGE=DIR)"; fi

# PyTorch's own launcher runs `ofa train` as its ranks (torch with its CUDA stack: 4.6 GB, so not in `make test`).
test-torchrun: setup
	@test -x .torchrun-venv/bin/torchrun || (python3 -m venv .torchrun-venv && .torchrun-venv/bin/pip install --quiet "torch==2.11.0")
	OFA_TORCHRUN=$(CURDIR)/.torchrun-venv/bin/torchrun $(CARGO) test --workspace --locked --test ranks -- --ignored

bench-ranks: build  ## data-parallel steps, 1 and 2 ranks, against the reference under PyTorch DDP (needs make test-torchrun first)
	bash scripts/bench-train-ranks.sh 2

bench-data: build  ## streamed image folders against torchvision, RSS at 2,000 vs 20,000 images, data wait of a w1.0 step
	bash scripts/bench-data.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
