# Two entry points for a fresh machine: `make demo` and `make test`.
# Each bootstraps its own virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# A CPU wheel of torch may lie on local disk; pip looks there first when it exists.
WHEELS := $(wildcard /opt/wheels)
PIPFLAGS := --disable-pip-version-check $(if $(WHEELS),--find-links $(WHEELS))

.PHONY: demo test install lint bench clean

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIPFLAGS) --upgrade pip
	touch $@

# The compiled kernels are built at install time, so a change to any of their sources
# reinstalls.
KERNEL := $(wildcard src/pointwise/kernels/csrc/*.c src/pointwise/kernels/csrc/*.h)

$(VENV)/.demo: $(VENV)/.base pyproject.toml $(KERNEL)
	$(PIP) install $(PIPFLAGS) -e .
	touch $@

$(VENV)/.test: $(VENV)/.base pyproject.toml $(KERNEL)
	$(PIP) install $(PIPFLAGS) -e '.[test]'
	touch $@ $(VENV)/.demo

# `make install EXTRAS=train` (or torch, plot, onnx, bench, ...: pyproject.toml's extras)
EXTRAS ?= train
install: $(VENV)/.base
	$(PIP) install $(PIPFLAGS) -e '.[$(EXTRAS)]'
	touch $(VENV)/.demo

demo: $(VENV)/.demo
	$(VENV)/bin/pointwise explain

test: $(VENV)/.test
	$(PY) -m pytest -q

lint: $(VENV)/.test
	$(PIP) install $(PIPFLAGS) ruff mypy
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(VENV)/.test
	$(PY) benchmarks/bench_conv.py --suite ops --json results/ --png results/ops.png
	$(PY) benchmarks/bench_conv.py --suite models --json results/ --png results/models.png

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
	find src -name '*.so' -delete
