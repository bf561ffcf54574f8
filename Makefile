# ofa: two commands on a fresh Debian/Ubuntu machine with Rust and Python 3.
#   make demo   the main job on the embedded default (installs what it needs first)
#   make test   the whole test suite (installs what it needs first)
SHELL := /bin/bash
CARGO ?= cargo
OFA := target/release/ofa
DEMO := target/demo
REFDATA ?= ../shared/reference-data

.PHONY: setup build test demo bench fmt lint clean

setup:  ## libtorch 2.11.0 (project-local, from the PyPI wheel) and Fashion-MNIST; idempotent
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

test: setup
	$(CARGO) test --workspace --locked

demo: build
	@mkdir -p $(DEMO)
	@echo "== import the reference supernet checkpoint (.pth, legacy naming; space inferred)"
	$(OFA) import tests/fixtures/ofa-tiny/supernet_legacy_naming.pth --out $(DEMO)/supernet.safetensors
	@echo "== inspect it"
	$(OFA) inspect $(DEMO)/supernet.safetensors
	@echo "== cut out a subnet and run it"
	@echo '{"ks":[7,3,7,5,5,3,7,7,3,7,3,5,5,7,3,5,5,3,5,3],"e":[3,3,4,6,4,3,4,4,3,6,4,4,3,3,4,4,4,3,3,6],"d":[4,4,3,4,3],"r":44}' > $(DEMO)/arch.json
	$(OFA) extract --supernet $(DEMO)/supernet.safetensors --arch $(DEMO)/arch.json --out $(DEMO)/subnet.safetensors --net-config $(DEMO)/net.config.json
	$(OFA) infer --model $(DEMO)/subnet.safetensors --input tests/fixtures/ofa-tiny/io_3.safetensors --out $(DEMO)/logits.safetensors
	$(OFA) inspect $(DEMO)/subnet.safetensors
	@echo "== extraction benchmark (ofa-mbv3-w1.0, random weights)"
	$(OFA) bench extract --space ofa-mbv3-w1.0 --repeats 20
	@if [ -d $(REFDATA) ]; then \
	  echo "== search with the reference's pretrained predictor and Samsung Note10 tables ($(REFDATA))"; \
	  $(OFA) search --space ofa-mbv3-w1.2 --resolutions 160,176,192,208,224 --predictor $(REFDATA)/tutorial_acc_predictor.safetensors \
	    --latency-table $(REFDATA)/note10-lut --hardware note10 --max-latency-ms 25 && \
	  $(OFA) search --space ofa-mbv3-w1.2 --resolutions 160,176,192,208,224 --predictor $(REFDATA)/tutorial_acc_predictor.safetensors \
	    --latency-table $(REFDATA)/note10-lut --hardware note10 --pareto latency_ms --out $(DEMO)/front | tail -n 5; \
	else echo "== (search demo skipped: $(REFDATA) absent)"; fi

BENCH_PACKAGE ?= checkpoints/fashion-mnist

bench: build
	$(OFA) bench extract --space ofa-mbv3-w1.0
	$(OFA) bench predict
	$(OFA) bench search
	@command -v wrk >/dev/null || { echo "[bench] installing wrk (the HTTP load generator)"; \
	  apt-get update -qq && apt-get install -y -qq wrk; }
	@if [ -d $(BENCH_PACKAGE) ]; then $(OFA) bench serve --package $(BENCH_PACKAGE); \
	else echo "== (bench serve skipped: no package at $(BENCH_PACKAGE); set BENCH_PACKAGE=DIR)"; fi

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
