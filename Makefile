# The two commands of the README: `make demo` and `make test`. Both set up first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast fuzz lint format bench clean

setup: $(STAMP)

# Re-runs only when the pins or the project metadata change, so `make setup` is a no-op otherwise.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	# torchrec declares the CUDA fbgemm-gpu wheel as a dependency, which clashes with fbgemm-gpu-cpu:
	# install it alone; its real needs are pinned in requirements.txt.
	$(BIN)/python -m pip install --quiet --no-deps torchrec==1.8.0
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(BIN)/python -m dlrm_dist.demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not e2e and not distributed"

# A long property-based campaign: the parser against its one-line-at-a-time reference, fresh random
# inputs each run (CI runs the same properties derandomized, with few examples).
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/unit/test_parse_reference.py tests/unit/test_prep_reference.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/prep_throughput.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) demo runs
