# Two commands that work on a fresh machine (see README):
#   make demo   set up, run scripts/demo.sh (SPAN, AGDN x2 with real weights, ESC x4 fp16) and write report/
#   make test   set up and run the whole test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# type stubs for mypy on the TensorRT engine builder; --no-deps because the stubs package
	# depends on tensorrt-cu12-libs, a stub that downloads from an index CI cannot reach
	$(BIN)/python -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=30

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out report artifacts
