# BUSAssist: one entry point for every routine job. Needs only python3 (3.9-3.12) on the PATH.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DATA ?= ../shared/data/busi
PRETRAINED ?= ../shared/data/pretrained/mobilenet_v1_1.0_224_imagenet_frozen.pb
# The trainer reads where the data are from the environment (or --data / --pretrained), never from code.
export BUSASSIST_DATA := $(DATA)
export BUSASSIST_PRETRAINED := $(PRETRAINED)
RUN_DIR ?= runs/reproduce
OUT ?= results/sample

.PHONY: run test lint bench reproduce int8 experiments sample-data clean dicom3tools cpu-emulator review screenshots

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Inference-only install: numpy, pydicom, onnxruntime, Pillow (no torch).
$(VENV)/.stamp-run: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e .
	touch $@

# Everything for tests, training and benchmarks (torch==2.13.0 CPU build).
$(VENV)/.stamp-dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e ".[train,dev]"
	touch $@ $(VENV)/.stamp-run

# The desktop reviewer: numpy, pydicom, onnxruntime and PySide6 (no torch).
$(VENV)/.stamp-gui: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e ".[gui]"
	touch $@ $(VENV)/.stamp-run

REVIEW ?= Resources/SampleData
review: $(VENV)/.stamp-gui
	$(VENV)/bin/busassist-review $(REVIEW)

# The two screenshots of the README, rendered offscreen by the reviewer itself.
screenshots: $(VENV)/.stamp-gui
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/busassist-review --out results/screenshots \
	  --screenshot docs/images/review-sample.png Resources/SampleData
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/busassist-review --out results/screenshots --probability \
	  --screenshot docs/images/review-probability.png Resources/SampleData/sample_1_benign.dcm

run: $(VENV)/.stamp-run
	$(VENV)/bin/busassist analyze Resources/SampleData --out $(OUT); status=$$?; \
	echo "Results: $(OUT)/results.csv (scores), $(OUT)/masks/ (mask PNGs), $(OUT)/overlays/ (pictures)"; \
	test $$status -le 2

test: lint
	$(PY) -m pytest -q

lint: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff check BUSAssist Testing bench
	$(VENV)/bin/ruff format --check BUSAssist Testing bench

# Install a Debian tool a test needs when it is missing and apt is there; otherwise say which test is skipped.
# $(call apt_tool,COMMAND,PACKAGE,WHAT IS SKIPPED)
define apt_tool
	@command -v $(1) >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2)) >/dev/null 2>&1; } || \
	  echo "$(2) not installed: $(3) will be skipped"
endef

# dciodvfy (Debian's dicom3tools) checks every DICOM SEG the hostile-input tests write; without it that
# one test is skipped. Best effort: needs apt-get and root, as on CI.
dicom3tools:
	$(call apt_tool,dciodvfy,dicom3tools,the dciodvfy test)

# qemu-user (Debian's qemu-user) emulates an AMD EPYC and an AVX2-only Intel, against which
# Testing/Python/test_reproducible.py (training) and test_int8_other_cpus.py (int8 answers) compare this CPU.
cpu-emulator:
	$(call apt_tool,qemu-x86_64,qemu-user,the cross-CPU tests)

bench: $(VENV)/.stamp-dev
	$(PY) bench/benchmark.py --out bench/results.json
	$(PY) bench/roofline.py --results bench/results.json --out bench/roofline.json

# Retrain the shipped model from scratch (resumes an interrupted run), export, evaluate and
# compare with the shipped model card (--check: does it reproduce it?). A training of another recipe replaces the
# shipped model only when `busassist-train compare RUN --replace` says it may; `busassist-train publish RUN` then does.
# The recipe is fit's defaults with two choices made by the study reports/ema-agreement (rules fixed
# before it ran): the moving average of the weights (--keep ema) and seed 3, the shipped model's.
reproduce: $(VENV)/.stamp-dev
	$(VENV)/bin/busassist-train fit --data $(DATA) --out $(RUN_DIR) --keep ema --seed 3 --export
	$(VENV)/bin/busassist-train compare --check $(RUN_DIR)

# The int8 model of the bundled float32 one (docs/training.md#quantisation): cross-layer equalisation, 7-bit
# weights, bias correction, judged against float32 (the rule: AUC and Dice drop <= 0.005 on validation and
# test), then calibrated and carded on its own. The exporter's graph of the bundled weights (the bundled
# file is the rewritten fast form) is exported from `make reproduce`'s run, which is expected to train the same
# weights on any x86-64 CPU (the shipped ones, trained on a Zen 4, were rebuilt byte for byte on a Zen 3 without AVX-512). `--check` stops here (exit 3) when the int8 model fails the rule, as it does on the
# weights shipped since 2026-12-07 (reports/int8-98770c53); only a passing one is calibrated and carded, and
# `busassist-train publish $(INT8_DIR)/model --models-dir Resources/Models/int8` then bundles it.
INT8_DIR ?= runs/int8
int8: $(VENV)/.stamp-dev
	mkdir -p $(INT8_DIR)/model
	$(VENV)/bin/busassist-train export $(RUN_DIR) --exporter-graph $(INT8_DIR)/exporter-graph.onnx
	$(VENV)/bin/busassist-train tools equalize $(INT8_DIR)/exporter-graph.onnx --out $(INT8_DIR)/prepared --data $(DATA)
	$(VENV)/bin/busassist-train tools quantize $(INT8_DIR)/prepared --data $(DATA) --float-op Gemm --reduce-range \
	  --bias-correction 64 --against Resources/Models/emtnet.onnx --check
	cp $(INT8_DIR)/prepared/emtnet.int8.onnx $(INT8_DIR)/model/emtnet.onnx
	cp $(INT8_DIR)/prepared/split.json $(INT8_DIR)/model/split.json
	$(VENV)/bin/busassist-train calibrate $(INT8_DIR)/model --data $(DATA)
	$(VENV)/bin/busassist-train evaluate $(INT8_DIR)/model --data $(DATA) --derived-from Resources/Models/model_card.json

# The paper's four experiments as study specs (resumable; finished trainings are skipped), each with its
# report.md. PRESET=cpu-quick (128 px, 8 epochs) on a CPU; PRESET=full on a GPU. Two studies run side by
# side on one thread each, which keeps two cores busier than one training on two threads.
PRESET ?= cpu-quick
EXPERIMENTS ?= runs/experiments-$(PRESET)
# --threads 1: the trainer sets its thread count itself (part of the recipe), so OMP_NUM_THREADS alone no longer does.
STUDY1 := OMP_NUM_THREADS=1 $(VENV)/bin/busassist-train study run --threads 1
experiments: $(VENV)/.stamp-dev
	( $(STUDY1) sweep-wp --preset $(PRESET) --data $(DATA) --out $(EXPERIMENTS)/sweep-wp ) & first=$$!; \
	( $(STUDY1) grid --preset $(PRESET) --data $(DATA) --out $(EXPERIMENTS)/grid && \
	  $(STUDY1) cv --preset $(PRESET) --data $(DATA) --out $(EXPERIMENTS)/cv && \
	  $(STUDY1) ablation --preset $(PRESET) --data $(DATA) --out $(EXPERIMENTS)/ablation ) & second=$$!; \
	wait $$first; a=$$?; wait $$second; b=$$?; test $$a -eq 0 && test $$b -eq 0
	@echo "reports: $(foreach e,cv sweep-wp grid ablation,$(EXPERIMENTS)/$(e)/report.md)"

sample-data: $(VENV)/.stamp-dev
	$(PY) -m busassist.training.sample_study --data $(DATA) --out Resources/SampleData

clean:
	rm -rf $(VENV) .cache results .pytest_cache .ruff_cache build *.egg-info
