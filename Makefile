# Everything a fresh machine needs: `make demo` and `make test` set themselves up.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data test demo lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch lies on local disk; asking for it first keeps pip off the CUDA builds
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
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

test: setup data
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
