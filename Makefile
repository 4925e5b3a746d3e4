# Two commands do all the set-up:  `make demo` (the pipeline on a sample model)  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[rtx,dev,ray]"
	@# The tensorrt-rtx wheel ships only libtensorrt_rtx.so.1, but its ONNX parser dlopens the unversioned
	@# name when it imports a plugin node (and aborts without it): add the alias next to the library.
	cd "$$($(BIN)/python -c 'import os, tensorrt_rtx_libs as m; print(os.path.dirname(m.__file__))')" && \
		ln -sf libtensorrt_rtx.so.1 libtensorrt_rtx.so
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/surgery run sample_models/bert_ts_op14.onnx -o out/bert

test: $(STAMP)
	$(BIN)/python -m pytest -q

.PHONY: install demo test
