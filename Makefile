# `make demo` and `make test` each create or refresh .venv and install everything on a fresh clone.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out/demo

.PHONY: venv browser demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

# Reinstall whenever pyproject.toml changes. torch 2.13.0 (CPU) comes from the machine's local wheel.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,eval]"
	$(BIN)/pip install --quiet --no-deps mediapipe==0.10.21  # only its face .tflite files (see pyproject.toml)
	touch $(STAMP)

venv: $(STAMP)

# threads: every command decides them itself (morph4d/threads.py; --threads N overrides)
demo: $(STAMP)
	$(BIN)/morph4d demo --out $(OUT)

# tests/test_viewer.py drives Debian's chromium headless; as root, install it when missing (quietly). Elsewhere
# the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium) >/dev/null 2>&1 || echo "note: could not install chromium; tests/test_viewer.py will skip"; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q --durations=15

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) out
