# Two commands do all the set-up:  `make demo` (the pipeline on a sample model)  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[rtx,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/surgery run sample_models/bert_ts_op14.onnx -o out/bert

test: $(STAMP)
	$(BIN)/python -m pytest -q

.PHONY: install demo test
