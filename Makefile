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
PROXY := environment/proxy/node_modules/.bin/configurable-http-proxy

.PHONY: help setup kernel doctor lab test lint test-unit test-notebooks test-compat test-compat-ends test-gpu notebooks
.PHONY: bench bench-gpu clean
.PHONY: chromium proxy test-browser test-hub workshop

help:
	@echo "make lab        set up .venv, register the 'smolkit' kernel, run the doctor, start JupyterLab"
	@echo "make test       set up if needed, then lint and run the whole test suite (CPU)"
	@echo "make test-compat  the transformers-dependent tests on every tested transformers version (smolkit/compat.py)"
	@echo "make test-gpu   GPU tests and the notebooks under nbval-lax (on a machine with CUDA)"
	@echo "make bench      CPU benchmarks; make bench-gpu the GPU ones (bench/RESULTS.md)"
	@echo "make test-browser  JupyterLab in headless Chromium: run notebook 03, move its slider (screenshots in artifacts/)"
	@echo "make test-hub   the workshop JupyterHub on loopback: two participants run a notebook each"
	@echo "make workshop   prepare and start the workshop JupyterHub (environment/README.md, Workshop)"
	@echo "make doctor     check Python, torch, CUDA, Jupyter and the models"
	@echo "make notebooks  re-execute the notebooks on the CPU and save their outputs (NB=path for one; FORCE=1)"

$(STAMP): requirements.txt requirements-cpu.txt pyproject.toml environment/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) TORCH=$(TORCH) bash environment/setup.sh
	touch $@

setup: $(STAMP)

$(KERNEL): $(STAMP)
	VENV=$(VENV) bash environment/kernel.sh

kernel: $(KERNEL)

doctor: kernel
	$(PY) -m smolkit doctor

lab: doctor
	VENV=$(VENV) bash environment/lab.sh

lint: setup
	$(VENV)/bin/ruff check smolkit tests bench environment

test-unit: kernel
	$(PY) -m pytest -q -m "not gpu and not browser and not hub" tests smolkit

# nbval compares each notebook's text outputs with the committed ones, on the CPU: text exactly, printed decimals to
# one unit in their last digit (tests/nbval_numbers.py). The committed outputs must hold on any x86-64 CPU, so they
# are checked once per variation of the CPU kernels, each run setting only what its line says:
#   default       this machine's best ATen kernels (AVX-512 where there is one), 2 threads
#   avx2-1thread  ATen's AVX2 kernels, 1 thread (another summation order in every matrix product)
#   mkl-auto      MKL's conditional-numerical-reproducibility path instead of its fastest one, 2 threads
# One run: make test-notebooks NOTEBOOK_RUNS=default; some notebooks: NOTEBOOKS="notebooks/03_temperature.ipynb".
NOTEBOOK_RUNS ?= default avx2-1thread mkl-auto
NOTEBOOK_ENV_default := OMP_NUM_THREADS=2
NOTEBOOK_ENV_avx2-1thread := ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1
NOTEBOOK_ENV_mkl-auto := MKL_CBWR=AUTO OMP_NUM_THREADS=2
NOTEBOOKS ?= notebooks
NBVAL := -p tests.nbval_numbers --nbval --nbval-kernel-name smolkit --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 900
test-notebooks: $(addprefix test-notebooks-,$(NOTEBOOK_RUNS))

test-notebooks-%: kernel
	@[ -n "$(NOTEBOOK_ENV_$*)" ] || { echo "unknown notebook run '$*'; runs: default avx2-1thread mkl-auto" >&2; exit 2; }
	@$(NOTEBOOK_ENV_$*) $(PY) -c "import torch; print('== notebooks, run $*: $(NOTEBOOK_ENV_$*) ->', \
	  torch.backends.cpu.get_cpu_capability(), 'kernels,', torch.get_num_threads(), 'thread(s)')"
	CUDA_VISIBLE_DEVICES= $(NOTEBOOK_ENV_$*) $(PY) -m pytest -q -p no:cacheprovider -o addopts= $(NBVAL) $(NOTEBOOKS)

# The tests that depend on transformers' internals (parity, stage order, export, fast path, loading) against each
# transformers version the kit is tested with (smolkit/compat.py), one venv each in $(VENV)/compat. make test runs
# the oldest and the newest; TRANSFORMERS="5.25.0" tries others.
test-compat: setup
	VENV=$(VENV) bash environment/compat.sh $(TRANSFORMERS)

test-compat-ends: setup
	VENV=$(VENV) bash environment/compat.sh --ends

notebooks: kernel
	$(PY) environment/execute_notebooks.py $(if $(FORCE),--force) $(NB)

# Debian's Chromium for the browser test (Playwright cannot download its own browser here); installed when missing.
chromium:
	@[ -x $(CHROMIUM) ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "the browser test needs Chromium: sudo apt-get install chromium (or set CHROMIUM=path)" >&2; exit 1; fi; }

test-browser: kernel chromium
	SMOLKIT_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -m browser tests

# JupyterHub's proxy, pinned by environment/proxy/package-lock.json.
$(PROXY): environment/proxy/package-lock.json
	npm ci --prefix environment/proxy --no-audit --no-fund --loglevel=error
	touch $@

proxy: $(PROXY)

# As root (CI is): makes system accounts. The hub runs from its own venv, $(VENV)/workshop, which workshop.sh
# prepare builds from /usr/bin/python3 (participants must be able to run the interpreter) the first time.
test-hub: kernel proxy
	SMOLKIT_WORKSHOP_VENV=$(abspath $(VENV))/workshop $(PY) -m pytest -q -m hub tests

# As root: prepare and start the hub; add participants (also while it runs) with environment/workshop.sh users.
workshop: proxy
	bash environment/workshop.sh prepare
	bash environment/workshop.sh start

test: lint test-unit test-notebooks test-compat-ends test-browser test-hub

# On a CUDA machine: the GPU tests (fast path parity), then every notebook under nbval-lax (cells must run without
# error; outputs are not compared, since sampling on a GPU draws other random numbers than the CPU baselines).
test-gpu: kernel
	$(PY) -m pytest -q -m gpu tests
	$(PY) -m pytest -q -p no:cacheprovider -o addopts= --nbval-lax --nbval-kernel-name smolkit \
	  --nbval-cell-timeout 900 notebooks

# Benchmarks (bench/RESULTS.md): speed goals live here, not in tests.
bench: kernel
	$(PY) bench/bench_cpu.py --out bench/results-cpu.json

bench-gpu: kernel
	$(PY) bench/bench_gpu.py --weights embedded --static --vlm --out bench/results-gpu.json
	$(PY) bench/profile_startup.py --out bench/results-gpu-startup.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
