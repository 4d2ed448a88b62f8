# The two commands a newcomer needs:
#   make lab    prepare everything (first time: a local .venv) and open the course in JupyterLab
#   make test   prepare everything and run all tests
# Student check of one chapter (fails on any wrong or unattempted exercise):
#   make check NB=chapters/00_few_shot_tasks.ipynb
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch (small). On a CUDA machine: make TORCH_SPEC="torch" lab
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
NB     ?= chapters/00_few_shot_tasks.ipynb
PORT   ?= 8888
# Jupyter refuses to start as root unless told; containers and CI often run as root.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)
# Real Omniglot zips (optional): this project's shared data folder when it lies beside the clone.
export OMNIGLOT_DIR ?= $(wildcard $(abspath ../shared/data/omniglot))

.PHONY: lab test check chapters solutions bench bench-notebooks install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(BIN)/pip install --disable-pip-version-check -q -e .
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --port=$(PORT) $(LAB_ARGS) chapters/index.ipynb

test: $(STAMP)
	$(BIN)/python -m pytest

check: | $(STAMP)
	COURSE_STRICT=1 $(BIN)/python -m pytest -p no:cacheprovider -p course_utils.nbcheck --nbval-lax -o addopts="" $(NB)

chapters: $(STAMP)
	$(BIN)/python -m course_utils.exercises solutions chapters

# Re-execute solution notebooks (default: all), save them cleaned, regenerate chapters/:
#   make solutions SOL="solutions/03_maml.ipynb"
SOL ?= $(wildcard solutions/*.ipynb)
solutions: $(STAMP)
	$(BIN)/python -m course_utils.run_notebooks $(SOL)

# Every solution notebook at the quick budget: wall and CPU seconds against the 180-s budget
# (exits non-zero over budget; writes benchmarks/out/notebooks.md). Run it on an idle machine.
bench-notebooks: $(STAMP)
	$(BIN)/python benchmarks/notebooks.py

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
