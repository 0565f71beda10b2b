# The two commands of the README: `make demo` and `make test`. Both set up first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A second environment with the oldest torchrec of the supported range (dlrm_dist/compat.py) on the
# same pins otherwise: `make test-compat`.
COMPAT_VENV := .venv-compat
COMPAT_BIN := $(COMPAT_VENV)/bin
COMPAT_STAMP := $(COMPAT_VENV)/.installed
COMPAT_TORCHREC := 1.6.1

.PHONY: setup demo test test-fast test-compat fuzz lint format bench clean

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

# The unit and distributed tests (and the gpu ones, skipped without CUDA) with torchrec $(COMPAT_TORCHREC).
# The environment is built once, like .venv, and only rebuilt when the pins change.
test-compat: $(COMPAT_STAMP)
	$(COMPAT_BIN)/dlrm-doctor
	$(COMPAT_BIN)/python -m pytest -q tests/unit tests/distributed tests/gpu

$(COMPAT_STAMP): requirements.txt pyproject.toml
	test -x $(COMPAT_BIN)/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_BIN)/python -m pip install --quiet --upgrade pip
	$(COMPAT_BIN)/python -m pip install --quiet -r requirements.txt
	$(COMPAT_BIN)/python -m pip install --quiet --no-deps torchrec==$(COMPAT_TORCHREC)
	$(COMPAT_BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(COMPAT_STAMP)

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
	rm -rf $(VENV) $(COMPAT_VENV) demo runs
