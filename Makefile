# Two commands on a fresh clone:  `make lab`  and  `make test`.
# Both create or update .venv first, so neither needs a manual set-up step.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test lint bench bank notebooks student site clean

# Re-install when the dependency list changes. torch is installed first and pinned:
# an unpinned torch would pull the newest CUDA build (several GB) on machines without a GPU.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps "cffconvert==2.0.0" "pykwalify>=1.8" "docopt>=0.6" "ruamel.yaml>=0.17"
	touch $(STAMP)

# JupyterLab refuses to start as root (containers, cloud shells) unless told it may.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

test: lint
	$(BIN)/python -m pytest

# ruff: lint and format check (settings in pyproject.toml); `ruff format .` applies the format
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/loss_scaling.py

# Train every run the notebooks show (full mode, about 20 minutes on 2 cores) into the run bank
# that ships with the package; needs CIFAR-10 (DECORR_DATA). `make bank ONLY=name` rebuilds one.
bank: $(STAMP)
	$(BIN)/python -m decorr_lite bank $(if $(ONLY),--only $(ONLY),)

# Re-execute the notebooks in full mode, as committed, the way a student runs them: no dataset
# and an empty run cache, so 02, 03 and 06 show the run bank. Then strip the widget state, so the
# committed notebooks stay small and diff-able. (nbclient's store_widget_state=False breaks on
# Output widgets, hence the separate strip.)
NOTEBOOKS := $(wildcard notebooks/[0-9]*.ipynb)
notebooks: $(STAMP)
	env -u DECORR_DATA DECORR_CACHE="$$(mktemp -d)" DECORR_QUICK=0 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=1800 $(NOTEBOOKS)
	$(BIN)/python -c "import sys, nbformat; [nbformat.write((lambda nb: (nb.metadata.pop('widgets', None), nb)[1])(nbformat.read(p, 4)), p) for p in sys.argv[1:]]" $(NOTEBOOKS)

# The course website in build/site (open build/site/site/index.html, or serve the folder):
# the committed, executed notebooks (not re-executed), docs/, the instructor's guide and the API
# reference; warnings are errors. Needs no network beyond the package registry (MathJax is local).
site: $(STAMP)
	rm -rf build/site
	$(BIN)/sphinx-build -W --keep-going -q -b html -c site . build/site

# The student edition: the notebooks without their solutions, in student/ (replaced whole)
student: $(STAMP)
	$(BIN)/python tools/student_edition.py --out student

clean:
	rm -rf $(VENV) .pytest_cache
