# `make test` and `make demo` set everything up from nothing: .venv, pinned dependencies, an out-of-tree build of
# the package (scikit-build-core, build/), then run. Re-running only rebuilds what changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.deps-installed
PKG_STAMP := $(VENV)/.petmd-installed
LINT_STAMP := $(VENV)/.lint-installed
CPP_SOURCES := $(wildcard cpp/*.cpp cpp/*.h lammps-plugin/*.cpp lammps-plugin/*.h)
SOURCES := $(shell find python cpp lammps-plugin -type f \( -name '*.py' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name 'CMakeLists.txt' \) 2>/dev/null) CMakeLists.txt pyproject.toml

.PHONY: all install lint format test test-fast demo clean

all: install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(PKG_STAMP): $(DEPS_STAMP) $(SOURCES)
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps .
	touch $@

install: $(PKG_STAMP)

$(LINT_STAMP): requirements-lint.txt $(DEPS_STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-lint.txt
	touch $@

# cheap checks, before anything is built: mypy reads the pinned torch's types, hence the dependencies
lint: $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/clang-format --dry-run --Werror $(CPP_SOURCES)

# what `make lint` checks, applied
format: $(LINT_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/clang-format -i $(CPP_SOURCES)

test: install
	$(BIN)/python -m pytest -ra

test-fast: install
	$(BIN)/python -m pytest -ra -m "not slow"

demo: install
	$(BIN)/python examples/demo/run_demo.py

clean:
	rm -rf build demo-output
