# All set-up happens here: `make demo` and `make test` work on a fresh machine.
#
# llama-cpp-python compiles from source. Its default native build crashes on CPUs that advertise
# AMX/AVX-512 kernels they cannot run (seen in VMs), so we build a portable wheel once, with explicit
# flags, into a wheel folder outside the repo, and reuse it. pip's own wheel cache ignores CMAKE_ARGS,
# hence --no-cache-dir for that one build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WHEELS ?= $(HOME)/.cache/promptopt/wheels
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
TORCH_VERSION ?= 2.13.0
EXTRAS ?= embedded,litellm,torch,ease,optuna,postgres,dev
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install demo test bench clean-venv

$(WHEELS)/.llama-$(LLAMA_CPP_VERSION):
	mkdir -p $(WHEELS)
	@if ! ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "building llama-cpp-python $(LLAMA_CPP_VERSION) (about 5 minutes, once)"; \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PYTHON) -m pip wheel --no-cache-dir --no-deps \
			-w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION); \
	fi
	touch $@

$(BIN)/.installed: pyproject.toml Makefile $(WHEELS)/.llama-$(LLAMA_CPP_VERSION)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first: an open range would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/.installed

demo: install
	mkdir -p .promptopt
	$(BIN)/promptopt optimize --config examples/sentiment.yaml

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/lm_throughput.py
	$(BIN)/python benchmarks/loop_overhead.py

clean-venv:
	rm -rf $(VENV)
