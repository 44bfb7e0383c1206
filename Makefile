# smolkit: `make lab` to learn, `make test` to check everything. Both set up .venv first when needed.
#   TORCH=cpu|cu126   torch build (default cpu; cu126 is the GPU recipe, see environment/README.md)
#   PYTHON=python3    interpreter for the venv (3.11+)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH ?= cpu
PY := $(VENV)/bin/python
export JUPYTER_PLATFORM_DIRS := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# torch's CPU threads spin while waiting by default; with a notebook kernel and pytest sharing 2 cores that made
# notebooks 3-8x slower (measured); passive waiting changes no result.
export OMP_WAIT_POLICY := PASSIVE
STAMP := $(VENV)/.smolkit-setup-$(TORCH)
KERNEL := $(VENV)/share/jupyter/kernels/smolkit/kernel.json
CHROMIUM ?= /usr/bin/chromium
PROXY := workshop/proxy/node_modules/.bin/configurable-http-proxy

.PHONY: help setup kernel doctor lab test lint test-unit test-notebooks test-compat test-compat-ends test-gpu notebooks
.PHONY: bench bench-gpu clean test-noise regress cheatsheet time-notebooks test-engines
.PHONY: chromium proxy test-browser test-hub workshop test-lane-package test-lane-notebooks

help: ## list the targets, one line each (the notes after each target in this Makefile)
	@grep -E '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]+):.*## /\1\t/' | \
	  awk -F '\t' '{ printf "make %-24s %s\n", $$1, $$2 }'

$(STAMP): requirements.txt requirements-cpu.txt pyproject.toml environment/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) TORCH=$(TORCH) bash environment/setup.sh
	touch $@

setup: $(STAMP) ## create .venv and install the kit (TORCH=cpu|cu126; once, then when requirements change)

$(KERNEL): $(STAMP)
	VENV=$(VENV) bash environment/kernel.sh

kernel: $(KERNEL) ## register the venv as the Jupyter kernel 'smolkit'

doctor: kernel ## check Python, torch, CUDA, Jupyter and the models
	$(PY) -m smolkit doctor

lab: doctor ## set up, run the doctor, start JupyterLab: the way to learn
	VENV=$(VENV) bash environment/lab.sh

lint: $(TEST_STAMP) ## ruff over the package, tests, bench, environment and workshop
	$(VENV)/bin/ruff check smolkit tests bench environment workshop

# The test packages (requirements-test.txt: pytest, nbval, ruff, Playwright...) on top of the lab, before
# any test target; a learner's venv (make lab) goes without.
TEST_STAMP := $(VENV)/.smolkit-test
$(TEST_STAMP): requirements-test.txt $(STAMP)
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

test-unit: kernel $(TEST_STAMP) ## the package's pytest suite (no GPU, browser or hub)
	$(PY) -m pytest -q -m "not gpu and not browser and not hub and not engines" tests workshop/tests smolkit

# nbval compares each notebook's text outputs with the committed ones, on the CPU: text exactly, printed decimals to
# one unit in their last digit (tests/nbval_numbers.py). The committed outputs must hold on any x86-64 CPU, whose
# float32 kernels differ from ours by about 1e-6 relative, so every run plants noise of that size
# (tests/float_noise.py: each Linear layer's output times 1 + 1e-6 * r, r fixed per layer and seed): an output that
# moves under it is fragile on some machine, whichever machine this is. A run is named for what it sets:
#   noise-N       float noise from seed N, this machine's best ATen kernels, NOTEBOOK_THREADS (2; make test: 1)
#   plain         no noise, 2 threads: exactly what a learner's run prints here
#   avx2-1thread  ATen's AVX2 kernels, 1 thread; mkl-auto  MKL's reproducible path (the CPU variations that ran
#                 before the noise: each moves probabilities less than the noise does, bench/RESULTS.md)
# One notebook, three seeds: make test-notebooks NOTEBOOK_RUNS="noise-1 noise-2 noise-3" NOTEBOOKS=notebooks/03_temperature.ipynb
NOTEBOOK_RUNS ?= noise-1
# notebooks/13_engines.ipynb needs llama-cpp-python: make test-engines runs it, after building it.
ENGINE_NOTEBOOKS := notebooks/13_engines.ipynb
NOTEBOOKS ?= $(filter-out $(ENGINE_NOTEBOOKS),$(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb)))
NOTEBOOK_ENV_plain := OMP_NUM_THREADS=2
NOTEBOOK_ENV_avx2-1thread := ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1
NOTEBOOK_ENV_mkl-auto := MKL_CBWR=AUTO OMP_NUM_THREADS=2
NBVAL := -p tests.nbval_numbers --nbval --nbval-kernel-name smolkit --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 900
test-notebooks: $(addprefix test-notebooks-,$(NOTEBOOK_RUNS))  ## the notebooks under nbval (NOTEBOOK_RUNS, NOTEBOOKS)

NOTEBOOK_THREADS ?= 2
test-notebooks-noise-%: kernel $(TEST_STAMP) ## the notebooks under float noise from seed %
	@echo "== notebooks, run noise-$*: float noise seed $*, $(NOTEBOOK_THREADS) thread(s)"
	CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=$(NOTEBOOK_THREADS) $(PY) -m pytest -q -p no:cacheprovider -o addopts= $(NBVAL) \
	  --float-noise $* $(NOTEBOOKS)

test-notebooks-%: kernel $(TEST_STAMP) ## the notebooks in one run: plain, avx2-1thread or mkl-auto
	@[ -n "$(NOTEBOOK_ENV_$*)" ] || { echo "unknown notebook run '$*'; runs: noise-N plain avx2-1thread mkl-auto" >&2; exit 2; }
	@$(NOTEBOOK_ENV_$*) $(PY) -c "import torch; print('== notebooks, run $*: $(NOTEBOOK_ENV_$*) ->', \
	  torch.backends.cpu.get_cpu_capability(), 'kernels,', torch.get_num_threads(), 'thread(s)')"
	CUDA_VISIBLE_DEVICES= $(NOTEBOOK_ENV_$*) $(PY) -m pytest -q -p no:cacheprovider -o addopts= $(NBVAL) $(NOTEBOOKS)

# Every committed output under three seeds of noise: the check behind "robust by construction" (bench/RESULTS.md).
test-noise: ## the notebooks under float noise from seeds 1, 2 and 3
	$(MAKE) test-notebooks NOTEBOOK_RUNS="noise-1 noise-2 noise-3"

# What moved after an upgrade, as a report (tests/regress.py): every notebook rerun and compared with the committed
# outputs (or with a run on AGAINST=X.Y.Z), each moved line judged float noise or a real change.
#   make regress                               this venv against the committed outputs
#   make regress TRANSFORMERS=5.24.0           that transformers (a venv of environment/compat.sh) against them
#   make regress TRANSFORMERS=5.24.0 AGAINST=5.17.0
REGRESS := artifacts/regress
# each compat venv runs with the model converted by its own transformers, as compat.sh's tests do
regress_run = $(if $(1),SMOLKIT_CACHE_DIR=$(abspath $(VENV))/compat/transformers-$(1)/smolkit-cache) $(PY) -m tests.regress run \
  --python $(if $(1),$(VENV)/compat/transformers-$(1)/bin/python,$(PY)) --out $(REGRESS)/$(or $(1),venv) \
  $(filter-out notebooks,$(NOTEBOOKS))
regress: kernel $(TEST_STAMP) ## rerun the notebooks and write artifacts/regress/report.md: what moved, noise or real
	$(if $(TRANSFORMERS)$(AGAINST),VENV=$(VENV) bash environment/compat.sh --setup $(TRANSFORMERS) $(AGAINST))
	$(call regress_run,$(TRANSFORMERS))
	$(if $(AGAINST),$(call regress_run,$(AGAINST)))
	$(PY) -m tests.regress compare $(if $(AGAINST),$(REGRESS)/$(AGAINST),committed) \
	  $(REGRESS)/$(or $(TRANSFORMERS),venv) --report $(REGRESS)/report.md

# The tests that depend on transformers' internals (parity, stage order, export, fast path, loading) against each
# transformers version the kit is tested with (smolkit/compat.py), one venv each in $(VENV)/compat. make test runs
# the oldest and the newest; TRANSFORMERS="5.25.0" tries others.
test-compat: setup ## the transformers-dependent tests on every tested transformers (smolkit/compat.py)
	VENV=$(VENV) bash environment/compat.sh $(TRANSFORMERS)

test-compat-ends: setup ## the same on the oldest and the newest tested transformers
	VENV=$(VENV) bash environment/compat.sh --ends

notebooks: kernel ## re-execute the notebooks on the CPU and save their outputs (NB=path for one; FORCE=1)
	$(PY) environment/execute_notebooks.py $(if $(FORCE),--force) $(NB)

# The participant's cheat sheet, generated from the kit (smolkit/cheatsheet.py); the PDF is printed by Chromium.
cheatsheet: kernel chromium ## the participant's one-page cheat sheet: workshop/cheatsheet.html (+ .pdf printed by Chromium)
	$(PY) -m smolkit.cheatsheet --pdf workshop/cheatsheet.pdf --chromium $(CHROMIUM)

# How long each notebook's sections take to run, for the facilitator's paths (workshop/README.md).
time-notebooks: kernel ## time every notebook section (bench/results-notebook-times.json, workshop/README.md)
	nice -n 10 $(PY) bench/time_notebooks.py --out bench/results-notebook-times.json $(NB)

# Debian's Chromium for the browser test (Playwright cannot download its own browser here); installed when missing.
chromium: ## install Debian's Chromium for the browser test when missing
	@[ -x $(CHROMIUM) ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "the browser test needs Chromium: sudo apt-get install chromium (or set CHROMIUM=path)" >&2; exit 1; fi; }

test-browser: kernel $(TEST_STAMP) chromium ## JupyterLab in headless Chromium: run notebook 03, move its slider (screenshots in artifacts/)
	SMOLKIT_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -m browser tests

# JupyterHub's proxy, pinned by workshop/proxy/package-lock.json.
$(PROXY): workshop/proxy/package-lock.json
	npm ci --prefix workshop/proxy --no-audit --no-fund --loglevel=error
	touch $@

proxy: $(PROXY) ## install JupyterHub's proxy (workshop/proxy)

# As root (CI is): makes system accounts. The hub runs from its own venv, $(VENV)/workshop, which workshop.sh
# prepare builds from /usr/bin/python3 (participants must be able to run the interpreter) the first time.
test-hub: kernel $(TEST_STAMP) proxy ## the workshop JupyterHub on loopback: participants run notebooks, one tries the other's files
	SMOLKIT_WORKSHOP_VENV=$(abspath $(VENV))/workshop $(PY) -m pytest -q -m hub workshop/tests

# As root: prepare and start the hub; add participants (also while it runs) with workshop/workshop.sh users.
workshop: proxy ## prepare and start the workshop JupyterHub (as root; workshop/SETUP.md)
	bash workshop/workshop.sh prepare
	bash workshop/workshop.sh start

# make test runs two lanes at once, one a core, each test process on one thread (a single suite keeps two cores
# busy only part of the time), then the hub test alone (it starts kernels of its own). Each lane's output is printed
# when the lane ends. The notebooks then run on one thread, another summation order than the committed two-thread
# run, on top of the float noise.
test: ## set up if needed, then lint and run every CPU test: what CI runs
	$(MAKE) kernel proxy chromium $(TEST_STAMP)
	OMP_NUM_THREADS=1 $(MAKE) -j2 --output-sync=recurse NOTEBOOK_THREADS=1 test-lane-package test-lane-notebooks
	$(MAKE) test-hub

test-lane-package: lint test-unit
	@echo "== lane done: lint and unit tests"

test-lane-notebooks: test-notebooks test-compat-ends test-browser
	@echo "== lane done: notebooks, compat, browser"

# On a CUDA machine: the GPU tests (fast path parity), then every notebook under nbval-lax (cells must run without
# error; outputs are not compared, since sampling on a GPU draws other random numbers than the CPU baselines).
test-gpu: kernel $(TEST_STAMP) ## GPU tests and the notebooks under nbval-lax (on a machine with CUDA)
	$(PY) -m pytest -q -m gpu tests
	$(PY) -m pytest -q -p no:cacheprovider -o addopts= --nbval-lax --nbval-kernel-name smolkit \
	  --nbval-cell-timeout 900 notebooks

# A real llama.cpp (issue 26): llama-cpp-python (requirements-engines.txt) built once from its source distribution
# with portable CPU flags into a wheel cached under ~/.cache/smolkit/wheels (environment/llama_cpp.sh; a fresh clone
# reuses it), installed into the venv; then the tests marked engines (chi-square against llama.cpp's own draws, its
# OpenAI-compatible server on loopback) and notebook 13 under nbval.
ENGINES_STAMP := $(VENV)/.smolkit-engines
$(ENGINES_STAMP): requirements-engines.txt environment/llama_cpp.sh $(STAMP)
	VENV=$(VENV) bash environment/llama_cpp.sh
	touch $@

test-engines: kernel $(TEST_STAMP) $(ENGINES_STAMP) ## build llama-cpp-python once (cached), then the llama.cpp tests and notebook 13
	$(PY) -m pytest -q -m engines tests
	CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 $(PY) -m pytest -q -p no:cacheprovider -o addopts= $(NBVAL) \
	  --float-noise 1 $(ENGINE_NOTEBOOKS)

# Benchmarks (bench/RESULTS.md): speed goals live here, not in tests.
bench: kernel ## CPU benchmarks (bench/RESULTS.md)
	$(PY) bench/bench_cpu.py --out bench/results-cpu.json

bench-gpu: kernel ## GPU benchmarks (bench/RESULTS.md)
	$(PY) bench/bench_gpu.py --weights embedded --static --vlm --out bench/results-gpu.json
	$(PY) bench/profile_startup.py --out bench/results-gpu-startup.json

clean: ## remove the venv and the caches of pytest, ruff and hypothesis
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
