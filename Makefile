# Two commands on a fresh machine:  `make demo` (main job) and `make test` (CI's tests).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo eval-demo test test-all clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test,quippy,dask]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/mtpjax distill run distill/configs/demo.toml

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --durations=15

test-all: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --durations=25

clean:
	rm -rf $(VENV) runs .pytest_cache

eval-demo: $(STAMP)
	$(BIN)/python scripts/demo.py
