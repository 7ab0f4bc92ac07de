# The two commands of the README: `make book` and `make test`. Both set up .venv themselves.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXECUTE ?= 0
# pytest-xdist is not used: notebooks and tests share 2 cores; nbval runs notebooks one by one.
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg

.PHONY: book test unit notebooks build execute pages clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import sys; assert sys.version_info >= (3, 10), sys.version" || { echo "need Python 3.11 (python3.11 on PATH, or make PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: 2.13.0 is the CPU wheel this project is tested with
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## make book: build the HTML book into _build/html (EXECUTE=1 re-executes every notebook first)
book: $(STAMP)
ifeq ($(EXECUTE),1)
	$(PY) -m unstable_gradients.report execute
endif
	$(PY) -m unstable_gradients.report pages
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "open _build/html/index.html"

build: book

## make execute: re-execute all notebooks in place, recording time and peak memory
execute: $(STAMP)
	$(PY) -m unstable_gradients.report execute

## make test: unit tests, notebooks under nbval, and the book build with warnings as errors
test: $(STAMP) unit notebooks
	$(PY) -m unstable_gradients.report pages
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

unit: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider

notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax book -q -p no:cacheprovider --nbval-cell-timeout=600

clean:
	rm -rf _build
