# The two set-up commands: `make demo` (the main job) and `make test` (the suite).
# Both create or reuse .venv and install the project with pinned dependencies.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-seg test lint bench results install clean

$(STAMP): pyproject.toml
	@echo ">> system library open3d needs (libusb-1.0-0)"
	@if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0.so.0; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo ">> apt-get install -y libusb-1.0-0"; \
	    (apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq libusb-1.0-0 >/dev/null)); \
	  else echo "!! libusb-1.0-0 missing and not root: sudo apt-get install libusb-1.0-0"; fi; \
	fi
	@echo ">> virtual environment $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo ">> pip install -e .[test] (torch==2.14.1, torchvision==0.29.1, lightning, timm, torchmetrics, wandb, open3d, h5py)"
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e .[test]
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@echo ">> i2p demo (pretrain 2D -> inflate -> FIP-IO finetune -> test, offline W&B)"
	$(VENV)/bin/i2p demo

demo-seg: $(STAMP)
	@echo ">> i2p demo --task seg (pretrain 2D -> inflate into a UNet encoder -> finetune on generated rooms -> test mIoU)"
	$(VENV)/bin/i2p demo --task seg

test: $(STAMP)
	@echo ">> pytest"
	$(PY) -m pytest -q tests

lint: $(STAMP)
	@echo ">> ruff check"
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/sparse_conv.py

results: $(STAMP)
	@echo ">> i2p report: docs/results.md from the sweep folders under runs/ (docs/experiments.md)"
	$(VENV)/bin/i2p report

clean:
	rm -rf $(VENV) runs wandb lightning_logs
