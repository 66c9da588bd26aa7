# The two commands of the README:
#   make demo   set up (venv, CPU torch where none is present, the package) and train the default model
#               on the embedded MNIST-10k, writing runs/demo/report.{json,html} and the model
#   make test   set up the same way and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. On machines whose pip does not already serve it, point pip at the CPU index:
#   make demo TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: setup demo test lint app docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/workbench train --data mnist10k --model cnn --out runs/demo

# pytest exits 5 when it collects no tests; make would report any failure as its own code 2, so the
# reason is printed here and the exit code kept for .ci/run (WORKBENCH_EXIT_CODE_FILE).
test: setup
	@$(BIN)/python -m pytest -q; code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; \
	if [ -n "$$WORKBENCH_EXIT_CODE_FILE" ]; then echo $$code > "$$WORKBENCH_EXIT_CODE_FILE"; fi; \
	exit $$code

lint: setup
	$(BIN)/ruff check workbench attacks defenses tests app.py benchmarks

app: setup
	$(BIN)/streamlit run app.py --server.fileWatcherType none

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict && $(BIN)/mkdocs serve

clean:
	rm -rf runs tests/_artifacts .pytest_cache site
