# Entry points for a fresh machine: `make run` (whole DVC pipeline on the synthetic default),
# `make test` (the test suite, browser tests included) and `make lab` (JupyterLab on notebooks/).
# All create .venv when it is missing. `make stages` regenerates dvc.yaml and pipelines/*/dvc.yaml
# from the method specs, `make notebooks` every notebook.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LAB_PORT ?= 8888

.PHONY: run test lint venv clean-venv data mutants listed-mutations lab browser screenshots stages notebooks

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

stages: $(STAMP)
	$(BIN)/python -m fsadlib.pipeline

notebooks: $(STAMP)
	$(BIN)/python scripts/build_notebooks.py

test: $(STAMP) browser
	PATH="$(CURDIR)/$(BIN):$$PATH" HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# JupyterLab from the venv on 127.0.0.1:$(LAB_PORT), serving notebooks/ with the project kernel.
lab: $(STAMP)
	$(BIN)/python -m fsadlib.lab --port $(LAB_PORT)

# Debian's Chromium for the browser tests (tests/ui drive it with Playwright); installed once, as root.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	  else echo "tests/ui need Debian's chromium (sudo apt-get install chromium); they skip without it" >&2; fi; }

# Browser tests, then the README's screenshots (docs/img/) from what they saved in reports/ui/.
screenshots: $(STAMP) browser
	PATH="$(CURDIR)/$(BIN):$$PATH" HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/ui
	$(BIN)/python docs/readme_images.py reports/ui docs/img

# Record the real data under data/real in data.dvc (refuses symbolic links, which DVC cannot track).
data: $(STAMP)
	$(BIN)/python -m fsadlib.data.links
	$(BIN)/dvc commit -f data.dvc

# mutation testing (slow, not in CI): cosmic-ray per formula module with its tests; MODULE=<substring>,
# SAMPLE=<n> runs a seeded random sample of n mutants per module (figures: tests/reference/MUTANTS.md)
SAMPLE ?= 0
mutants: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python tests/reference/mutants.py --only "$(MODULE)" --sample $(SAMPLE)

# the formula changes listed in issue 15 must each make a test fail
listed-mutations: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python tests/reference/listed_mutations.py

lint: $(STAMP)
	$(BIN)/ruff check fsadlib tests benchmarks

clean-venv:
	rm -rf $(VENV)
