# Two entry points for a fresh machine: `make run` (whole DVC pipeline on the synthetic default)
# and `make test` (the test suite). Both create .venv when it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test lint venv clean-venv data mutants listed-mutations

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m fsadlib.data.links
	PATH="$(CURDIR)/$(BIN):$$PATH" HF_HUB_OFFLINE=1 $(BIN)/dvc repro

# Record the real data under data/real in data.dvc (refuses symbolic links, which DVC cannot track).
data: $(STAMP)
	$(BIN)/python -m fsadlib.data.links
	$(BIN)/dvc commit -f data.dvc

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# mutation testing (slow, not in CI): cosmic-ray per formula module with its tests; MODULE=<substring>
mutants: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python tests/reference/mutants.py --only "$(MODULE)"

# the formula changes listed in issue 15 must each make a test fail
listed-mutations: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python tests/reference/listed_mutations.py

lint: $(STAMP)
	$(BIN)/ruff check fsadlib tests benchmarks

clean-venv:
	rm -rf $(VENV)
