# The two commands the README promises: `make lab` and `make test`. Both do all set-up themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ftlib-installed
NBVAL  := --nbval-lax --nbval-current-env --nbval-cell-timeout=1800 --sanitize-with notebooks/sanitize.cfg
PORT   ?= 8888

.PHONY: lab test lint unit notebooks assets setup bench clean

setup: $(STAMP)

# torch at the pin pyproject.toml holds (the one place it is written), named in the same pip command as the project
# so the resolver takes that CPU wheel from local disk and nothing can pull a CUDA build. Byte-compile every installed
# file, but on all cores (compileall -j 0) instead of pip's one (15 s less set-up, docs/benchmarks.md); without .pyc
# files every process compiles torch again. torch ships one Python-3.12-only test file, left out (pip skips it too);
# any other file that does not compile on this Python is named in the log, and set-up goes on, as pip's would.
TORCH := $(shell grep -oE '"torch==[^"]+"' pyproject.toml | tr -d '"')
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) --no-compile $(TORCH) -e '.[dev]'
	$(BIN)/python -m compileall -q -j 0 -x 'torch/testing/_internal/py312_' $(VENV)/lib >$(VENV)/compileall.log 2>&1 \
	    || echo "setup: some installed files do not compile on this Python (pip skips them too): $(VENV)/compileall.log"
	touch $@

assets: $(STAMP)
	$(BIN)/python -m ftlib.assets fetch

# No "get notified about official Jupyter news?" pop-up and no update check (a class is often offline): JupyterLab
# 4.6 asks only while the notification setting fetchNews is "none"; overrides.json changes the default for this venv.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings
lab: assets
	mkdir -p $(LAB_SETTINGS) && cp tools/lab-overrides.json $(LAB_SETTINGS)/overrides.json
	$(BIN)/jupyter lab --notebook-dir=notebooks --port=$(PORT) $(if $(filter 0,$(shell id -u)),--allow-root)

# Unit tests alone (`make unit`): pytest-xdist, two workers of one thread, a file per worker (module fixtures are
# set up once). Inside `make test` they run as two of the jobs below instead.
unit: assets
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile tests/

# Committed outputs come from an unpinned 2-thread run on an AVX-512-BF16 CPU; under nbval the kernels are pinned to
# AVX2 on one thread, so a checked cell that depends on the last bits fails here, not on a learner's machine. The
# notebooks that train (NB_TRAINING) are the exception: pinned they train in fp32, 1.3-1.5x as long, too long for
# CI. `make notebooks PIN_TRAINING=1` pins them too: do that after changing one of them. x86-64 only.
# Measurements behind these choices: docs/benchmarks.md, "How make test is shaped".
PIN_ISA := $(if $(filter x86_64 amd64,$(shell uname -m)),ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)
NB_TRAINING := 05_sft 08_dpo 10_pad_eos
PIN_TRAINING ?=
NB_LOGS := $(VENV)/test-logs
# A job's output shows when it ends; its log stays in $(NB_LOGS)/.
PYTEST  := $(BIN)/python -m pytest -q -p no:cacheprovider --durations=5
RUN_NB   = OMP_NUM_THREADS=1 $(PIN_ISA) $(PYTEST) $(NBVAL)
# $(call run_nb,NAME): notebooks/NAME.ipynb under nbval on one thread, pinned unless it trains (PIN_TRAINING=1: all)
run_nb = OMP_NUM_THREADS=1 $(if $(filter $(1),$(NB_TRAINING)),$(if $(PIN_TRAINING),$(PIN_ISA)),$(PIN_ISA)) \
	$(PYTEST) $(NBVAL) notebooks/$(1).ipynb

# `make test` is a queue of one-thread jobs on two slots (make -j2): more threads per job stall each other. Every
# notebook in notebooks/ is a job of its own (found by wildcard: a new one cannot go untested), except the chain
# 05 -> 08 -> 09, one job as 08 uses the model 05 saves and 09 05's and 08's; the solutions notebooks are one job.
# 06 also loads 05's model: in `make test` its job waits for the stamp the chain writes once 05 has ended
# ($(NB_LOGS)/05.ended: "ok" or "failed"), so it runs in the other slot, last. Unit tests marked `slow` (pytest
# marker) are a job, the others another. TEST_JOBS runs the chain and the longest others first (measured in CI, see
# docs/benchmarks.md), then any job not measured yet, then 06; `make print-jobs` lists each job and what it runs.
NB_ALL    := $(sort $(basename $(notdir $(wildcard notebooks/[0-9][0-9]_*.ipynb))))
NB_CHAIN  := 05_sft 08_dpo 09_evaluate  # 08 loads the model 05 saves, 09 05's and 08's
NB_AFTER_05 := 06_chat                  # loads 05's model; waits for the chain's stamp in `make test`
NB_SOLO   := $(filter-out $(NB_CHAIN),$(NB_ALL))
NB_JOBS   := nb-chain $(addprefix nb-,$(NB_SOLO)) nb-solutions
LONGEST_FIRST := nb-chain unit-slow nb-10_pad_eos nb-07_lora unit-rest nb-solutions \
	nb-02_base_vs_instruct nb-04_chat_samples nb-01_generation nb-00_setup nb-03_alpaca_samples
LAST      := $(addprefix nb-,$(NB_AFTER_05))
ALL_JOBS  := $(NB_JOBS) unit-slow unit-rest
TEST_JOBS := $(filter $(ALL_JOBS),$(LONGEST_FIRST)) $(filter-out $(LONGEST_FIRST) $(LAST),$(ALL_JOBS)) $(LAST)
STAMP_05  := $(NB_LOGS)/05.ended
# written when the last job outside the chain ends (then the chain's kernels take the second core)
STAMP_ALONE := $(NB_LOGS)/others.ended
IPY_CHAIN := $(NB_LOGS)/ipython
CHAIN_ENV  = IPYTHONDIR=$(abspath $(IPY_CHAIN)) FTLIB_ALONE_STAMP=$(abspath $(STAMP_ALONE))
WAIT_05   ?=
.PHONY: $(NB_JOBS) unit-slow unit-rest print-jobs

# $(call job,NAME,COMMAND): run it with its output in $(NB_LOGS)/NAME.log; say its pytest summary line(s); on a
# failure print the whole log.
define job
	@mkdir -p $(NB_LOGS)
	@t=$$(date +%s); { $(2); } >$(NB_LOGS)/$(1).log 2>&1; rc=$$?; \
	echo "== $(1) [$$(( $$(date +%s) - t )) s, until $$(date +%T)]: $$(grep -E ' in [0-9.]+s' $(NB_LOGS)/$(1).log \
	    | tr '\n' ' ')(exit $$rc)"; \
	[ $$rc = 0 ] || { cat $(NB_LOGS)/$(1).log; exit $$rc; }
endef

# 05, then the stamp (06's job reads it), then 08 and 09 only if 05 passed. The chain's kernels take a second thread
# once the other slot's last job has ended (its stamp, $(STAMP_ALONE)): tools/two_threads_when_alone.py, an IPython
# start-up file in a private IPYTHONDIR, checks before each cell.
nb-chain: assets
	@mkdir -p $(IPY_CHAIN)/profile_default/startup && cp tools/two_threads_when_alone.py $(IPY_CHAIN)/profile_default/startup/
	$(call job,$@,export $(CHAIN_ENV); \
	    { $(call run_nb,$(word 1,$(NB_CHAIN))) \
	    && echo ok >$(STAMP_05) || { echo failed >$(STAMP_05); false; }; } \
	    $(foreach nb,$(wordlist 2,9,$(NB_CHAIN)),&& $(call run_nb,$(nb))))

# With WAIT_05=1 (as `make test` sets it) 06 first waits for the chain's 05 to end, and fails at once if it failed.
$(LAST): nb-%: assets
	$(if $(WAIT_05),@until [ -s $(STAMP_05) ]; do sleep 5; done; \
	    [ "$$(cat $(STAMP_05))" = ok ] || { echo "== $@: not run: notebook 05 failed and 06 needs its model"; exit 1; })
	$(call job,$@,$(call run_nb,$*); r=$$?; touch $(STAMP_ALONE); (exit $$r))

$(filter-out $(LAST),$(addprefix nb-,$(NB_SOLO))): nb-%: assets
	$(call job,$@,$(call run_nb,$*))

nb-solutions: assets
	$(call job,$@,$(RUN_NB) notebooks/solutions/)

unit-slow: assets
	$(call job,$@,OMP_NUM_THREADS=1 $(PYTEST) -m slow tests/)

unit-rest: assets
	$(call job,$@,OMP_NUM_THREADS=1 $(PYTEST) -m "not slow" tests/)

# One line per job of `make test`: the job, then the notebooks (files or folders) it runs (tests/ read this).
print-jobs:
	@echo "nb-chain: $(addprefix notebooks/,$(addsuffix .ipynb,$(NB_CHAIN)))"
	@$(foreach nb,$(NB_SOLO),echo "nb-$(nb): notebooks/$(nb).ipynb";)
	@echo "nb-solutions: notebooks/solutions/"
	@echo "unit-slow: tests/ -m slow"
	@echo "unit-rest: tests/ -m 'not slow'"
	@echo "order: $(TEST_JOBS)"

notebooks: assets
	@mkdir -p $(NB_LOGS) && rm -f $(STAMP_05) $(STAMP_ALONE)
	@$(MAKE) --no-print-directory -j2 -k WAIT_05=1 $(filter-out $(LAST),$(NB_JOBS)) $(LAST)

lint: $(STAMP)
	$(BIN)/ruff check ftlib tests benchmarks
	$(BIN)/lint-imports  # the import contracts in pyproject.toml: two wings, layers, no cycles

test: lint assets
	@mkdir -p $(NB_LOGS) && rm -f $(STAMP_05) $(STAMP_ALONE)
	@$(MAKE) --no-print-directory -j2 -k WAIT_05=1 $(TEST_JOBS)

bench: assets
	$(BIN)/python -m benchmarks.generation
	$(BIN)/python -m benchmarks.data
	$(BIN)/python -m benchmarks.sft

clean:
	rm -rf $(VENV) .pytest_cache

# The instructor's kit (docs/teaching.md). reset: the committed notebooks back (uncommitted edits under notebooks/
# are lost), everything untracked under notebooks/ (outputs/, saved models) and build/student, build/slides gone.
# student: build/student/, the notebooks without outputs or solutions, each "What to notice" folded.
# prepare: notebook 05's run through the CLI, from the same config file, into the folder 05 saves to
# (notebooks/outputs/sft-chat-<profile>, FTLIB_PROFILE as for the notebooks); then TRAIN = False in 05 (or
# FTLIB_TRAIN=0) loads it instead of training. Before class: a few minutes, like 05's training cell.
.PHONY: reset student slides prepare
PREPARE := $(BIN)/python -m ftlib.sft --config ../configs/sft-chat.yaml
prepare: assets
	cd notebooks && ../$(PREPARE)
reset:
	$(PYTHON) tools/classroom.py reset

student: $(STAMP)
	$(BIN)/python tools/classroom.py student

# slides: build/slides/<notebook>.slides.html, one reveal.js deck per notebook, opened offline (reveal.js, MathJax,
# require.js and jQuery fetched once from npm into build/slides/assets; no CDN). Notes: press S in a deck.
slides: $(STAMP)
	$(BIN)/python tools/slides.py render
