# The two commands the README gives: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench clean

# torch and torchvision are pinned here (not in pyproject, which keeps ranges) to the
# releases that pip finds on the build machines; override with TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_SPEC) || $(PIP) install --quiet torch torchvision
	$(PIP) install --quiet -e ".[dev,ray]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m pyronas.demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/curvature.py
	$(PY) benchmarks/search_overhead.py

clean:
	rm -rf $(VENV) runs build *.egg-info
