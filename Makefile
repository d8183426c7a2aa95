# Set-up and entry points. `make demo` and `make test` create the Python 3.10 virtualenv themselves.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: venv demo test lint bench results clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt scripts/find_python310.sh
	@PY310=$$(scripts/find_python310.sh) || exit 1; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then \
		echo "creating $(VENV) with $$PY310"; rm -rf $(VENV); "$$PY310" -m venv $(VENV) || exit 1; \
	fi
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) main.py -c configs/demo.yml --title demo-$$(date +%Y%m%d-%H%M%S) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadfile $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# docs/RESULTS.md from every shipped digits config (resumable; RESULTS_QUICK=1: smoke-sized, under a minute)
results: $(STAMP)
	$(PY) -m tools.results $(ARGS)

bench: $(STAMP)
	$(PY) bench/supernet_step.py $(ARGS)
	$(PY) bench/data_parallel.py
	$(PY) bench/constraint_eval.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
