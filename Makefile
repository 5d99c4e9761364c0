# Everything a fresh machine needs: `make demo` and `make test` set themselves up.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data browser test demo lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch lies on local disk; asking for it first keeps pip off the CUDA builds
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,mlflow,hf,keras]'
	touch $(STAMP)

data:
	@if [ -e $(FMNIST)/train-images-idx3-ubyte.gz ] || [ -e $(FMNIST)/train-images-idx3-ubyte ]; then \
	  echo "Fashion-MNIST found in $(FMNIST)"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else \
	  echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'," \
	       "or set DISTIQ_FASHION_MNIST to a folder holding its IDX files."; \
	fi
	@# the fortunes corpus of the hf extra's benchmark and one of its tests; never fails the build
	@if [ ! -d /usr/share/games/fortunes ] && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -qq fortunes fortunes-min >/dev/null 2>&1 \
	  || echo "Could not install fortunes: the installed-corpus test will be skipped"; \
	fi

# Chromium renders the HTML report in a test (skipped without it); installing it never fails the build
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  echo "Chromium found: the report rendering test will run"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	   || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)) >/dev/null 2>&1 \
	  || echo "Could not install chromium: the report rendering test will be skipped" \
	          "(install it with 'apt-get install chromium')."; \
	else \
	  echo "Chromium is missing: the report rendering test will be skipped;" \
	       "run 'sudo apt-get install chromium' (or 'sudo make browser') to enable it."; \
	fi

test: setup data browser
	$(BIN)/python -m pytest

demo: setup data
	$(BIN)/distiq demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: setup data
	$(BIN)/python bench/kd_fashion_mnist.py

clean:
	rm -rf $(VENV) runs bench/out
