# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing. GPU users: install your own torch build into .venv first
# (the CPU path pins torch==2.13.0; pyproject.toml only asks for torch>=2.3).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vthcl-installed
TORCH_CPU := torch==2.13.0
DEMO_RUN := runs/demo
PAPER_SMALL_RUN := runs/paper_small
PAPERMILL := $(BIN)/papermill --cwd notebooks --log-output -f notebooks/params/demo.yaml
DEMO_NOTEBOOKS := 00_setup_and_data 01_tempo_sampling 02_slow_fast_encoders 03_contrastive_loss 04_memory_bank
DOWNSTREAM_NOTEBOOKS := 06_action_recognition 07_linear_probe_and_retrieval
TRANSFER_NOTEBOOKS := 08_action_detection 09_action_anticipation
DEMO_SEEDS := [0, 1, 2]

.PHONY: demo demo-transfer demo-ablations demo-report demo-paper-small test venv bench clean-data

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_CPU)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job on the built-in synthetic data: generate it, run the notebooks headless into runs/demo/,
# pre-train VTHCL once per seed (notebook 05 makes seed 0, notebook 06 the others), compare random and
# VTHCL initialisation with every protocol over 3 seeds, and write runs/demo/summary.json + summary.png.
demo: $(STAMP)
	$(BIN)/python data_scripts/make_synthetic.py --preset demo --out data/synthetic/demo --workers 2 --sets recognition
	mkdir -p $(DEMO_RUN)
	for nb in $(DEMO_NOTEBOOKS); do \
	  $(PAPERMILL) notebooks/$$nb.ipynb $(DEMO_RUN)/$$nb.ipynb -p RUN_DIR ../$(DEMO_RUN)/$$nb || exit 1; \
	done
	$(PAPERMILL) notebooks/05_hierarchical_pretraining.ipynb $(DEMO_RUN)/05_hierarchical_pretraining.ipynb \
	  -p RUN_DIR ../$(DEMO_RUN)/pretrain/seed0
	for nb in $(DOWNSTREAM_NOTEBOOKS); do \
	  $(PAPERMILL) notebooks/$$nb.ipynb $(DEMO_RUN)/$$nb.ipynb -p RUN_DIR ../$(DEMO_RUN)/$$nb \
	    -y "SEEDS: $(DEMO_SEEDS)" || exit 1; \
	done
	$(BIN)/python -m vthcl_lib.report $(DEMO_RUN) --preset demo
	@echo "demo done: executed notebooks, metrics.json files, summary.json and summary.png are in $(DEMO_RUN)/"

# The transfer tasks at the demo preset (about 10 minutes after `make demo`, which leaves the three seeds'
# pre-trainings in runs/demo/pretrain; without them they are trained first): AVA-style detection and
# Epic-style anticipation, random against VTHCL initialisation over 3 seeds, into runs/demo/08_*, 09_*.
demo-transfer: $(STAMP)
	$(BIN)/python data_scripts/make_synthetic.py --preset demo --out data/synthetic/demo --workers 2 --sets recognition ava epic_kitchens
	mkdir -p $(DEMO_RUN)
	for nb in $(TRANSFER_NOTEBOOKS); do \
	  $(PAPERMILL) notebooks/$$nb.ipynb $(DEMO_RUN)/$$nb.ipynb -p RUN_DIR ../$(DEMO_RUN)/$$nb \
	    -y "SEEDS: $(DEMO_SEEDS)" || exit 1; \
	done

# The paper's Table 2 at the demo preset (about 1.5 hours on 2 cores after `make demo`, whose pre-trainings
# are the point alpha=2, D=3): 4 more points x 3 seeds pre-trained under runs/demo/ablations/ (each resumes
# from its last checkpoint when interrupted), every (point, seed) scored by the linear probe and fine-tuning.
demo-ablations: $(STAMP)
	$(BIN)/python data_scripts/make_synthetic.py --preset demo --out data/synthetic/demo --workers 2
	mkdir -p $(DEMO_RUN)
	$(PAPERMILL) notebooks/11_ablations.ipynb $(DEMO_RUN)/11_ablations.ipynb -p RUN_DIR ../$(DEMO_RUN)/11_ablations \
	  -y "SEEDS: $(DEMO_SEEDS)"

# The Instance Correspondence Maps (notebook 10, about 15 minutes the first time: it pre-trains the ICM
# model and a three-level model with linear heads) and the report of every metrics.json under runs/demo beside the paper's tables (notebook 12).
demo-report: $(STAMP)
	$(BIN)/python data_scripts/make_synthetic.py --preset demo --out data/synthetic/demo --workers 2
	mkdir -p $(DEMO_RUN)
	$(PAPERMILL) notebooks/10_instance_correspondence_map.ipynb $(DEMO_RUN)/10_instance_correspondence_map.ipynb \
	  -p RUN_DIR ../$(DEMO_RUN)/10_instance_correspondence_map
	$(PAPERMILL) notebooks/12_results_report.ipynb $(DEMO_RUN)/12_results_report.ipynb \
	  -p RUN_DIR ../$(DEMO_RUN)/12_results_report -p RUNS_ROOT ../$(DEMO_RUN)

# The paper's own objective at a CPU scale (preset paper_small: bank positives, shared negatives, SGD with
# momentum, T = 0.07, cosine, one shared augmentation draw; narrow encoders, short clips) on the demo corpus:
# notebook 07 pre-trains seeds 0, 1, 2 under runs/paper_small/pretrain and scores random against VTHCL
# initialisation with the linear probe, kNN and retrieval (the README's paper_small table; about an hour on 2 cores).
demo-paper-small: $(STAMP)
	$(BIN)/python data_scripts/make_synthetic.py --preset demo --out data/synthetic/demo --workers 2
	mkdir -p $(PAPER_SMALL_RUN)
	$(BIN)/papermill --cwd notebooks --log-output -f notebooks/params/paper_small.yaml \
	  notebooks/07_linear_probe_and_retrieval.ipynb $(PAPER_SMALL_RUN)/07_linear_probe_and_retrieval.ipynb \
	  -p RUN_DIR ../$(PAPER_SMALL_RUN)/07_linear_probe_and_retrieval -y "SEEDS: $(DEMO_SEEDS)"
	@echo "paper_small done: $(PAPER_SMALL_RUN)/07_linear_probe_and_retrieval/metrics.json, summary.json in $(PAPER_SMALL_RUN)/"

# Library tests, then every notebook headless at the ci preset (collected by glob).
test: $(STAMP)
	VTHCL_PRESET=ci $(BIN)/python -m pytest -q tests
	VTHCL_PRESET=ci $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env notebooks

bench: $(STAMP)
	$(BIN)/python -m vthcl_lib.bench data --data-root data/synthetic/demo --json runs/demo/bench_data.json
	$(BIN)/python -m vthcl_lib.bench train --preset demo --json runs/demo/bench_train.json
	$(BIN)/python -m vthcl_lib.bench flops --preset paper_r18 --json runs/demo/bench_flops_paper_r18.json
	$(BIN)/python -m vthcl_lib.bench flops --preset paper_r50 --json runs/demo/bench_flops_paper_r50.json
	$(BIN)/python -m vthcl_lib.bench data --paper --json runs/demo/bench_data_paper.json
	$(BIN)/python -m vthcl_lib.bench decode-gop --json runs/demo/bench_decode_gop.json
	$(BIN)/python -m vthcl_lib.bench metrics --json runs/demo/bench_metrics.json

clean-data:
	rm -rf data/synthetic runs
