"""vthcl_lib.config: presets, overrides by name, coercion from strings, validation, parameter files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vthcl_lib.config import PRESETS, apply_overrides, config_from_params, load_params_file, resolve_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_resolve(preset):
    cfg = resolve_config(preset)
    assert cfg.preset == preset
    assert cfg.data.window % cfg.data.tau == 0 and cfg.data.tau % cfg.data.alpha == 0


def test_paper_presets_follow_the_paper():
    cfg = resolve_config("paper_r18")
    assert (cfg.data.window, cfg.data.tau, cfg.data.alpha, cfg.data.crop_size) == (64, 8, 2, 224)


def test_overrides_by_name_and_section():
    cfg = resolve_config("ci", alpha=4, seed=3, **{"data.crop_size": 24, "synthetic.seed": 9})
    assert (cfg.data.alpha, cfg.seed, cfg.data.crop_size, cfg.synthetic.seed) == (4, 3, 24, 9)
    assert resolve_config("ci", alpha=None).data.alpha == resolve_config("ci").data.alpha  # None: the preset's value


def test_strings_are_coerced_like_the_command_line():
    cfg = apply_overrides(resolve_config("ci"), {"alpha": "4", "use_cache": "false", "decode_size": "32,40",
                                                 "cache_dir": "none", "crop_scale": "0.5,1.0"})
    assert cfg.data.alpha == 4 and cfg.data.use_cache is False and cfg.data.decode_size == (32, 40)
    assert cfg.data.cache_dir is None and cfg.data.crop_scale == (0.5, 1.0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"alpha": 3}, "divisible"),
        ({"alpha": 0}, "alpha"),
        ({"nope": 1}, "unknown config field 'nope'"),
        ({"alpha": "two"}, "alpha"),
        ({"backend": "opencv"}, "backend"),
        ({"short_video": "pad"}, "short_video"),
        ({"frame_size": 33}, "even"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_wrong_parameters_fail_with_a_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_config("ci", **overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'big'"):
        resolve_config("big")


def test_paths_resolve_against_base_dir(tmp_path, monkeypatch):
    cfg = resolve_config("ci", base_dir=tmp_path)
    assert cfg.data.data_root == str(tmp_path / "data/synthetic/ci")
    assert cfg.run_dir == str(tmp_path / "runs/ci")
    # A path the caller passes is the caller's: relative to the current directory, not to base_dir.
    work = tmp_path / "notebooks"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = resolve_config("ci", base_dir="..", run_dir="../runs/x", data_root="/abs/data")
    assert cfg.run_dir == str(tmp_path / "runs/x") and cfg.data.data_root == "/abs/data"
    assert cfg.data.cache_dir is None
    assert resolve_config("ci", base_dir="..", run_name="01_x").run_dir == str(tmp_path / "runs/ci/01_x")


def test_params_files_are_valid_configs():
    files = sorted((ROOT / "notebooks" / "params").glob("*.yaml"))
    assert {f.stem for f in files} >= {"ci", "demo"}
    for f in files:
        params = load_params_file(f)
        cfg = config_from_params(params)
        assert cfg.preset == params["preset"]


def test_params_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_params_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_params_file(bad)


def test_config_prints_as_json():
    assert '"preset": "ci"' in str(resolve_config("ci"))


def test_downstream_sections_and_presets():
    paper = resolve_config("paper_r50")
    assert (paper.finetune.finetune_lr, paper.finetune.finetune_milestones, paper.finetune.finetune_epochs) == (0.1, (40, 80), 100)
    assert paper.finetune.splits == (1, 2, 3) and paper.finetune.dropout == 0.5
    assert (paper.probe.knn_k, paper.probe.retrieval_ks) == (20, (1, 5, 10, 20, 50))
    demo = resolve_config("demo", knn_k=7, splits="1,2")
    assert demo.probe.knn_k == 7 and demo.finetune.splits == (1, 2)
    assert demo.synthetic.background == "plain" and demo.data.color_per_view and demo.contrast.in_batch_negatives
    with pytest.raises(ValueError, match="probe_level"):
        resolve_config("ci", probe_level="res6")
    with pytest.raises(ValueError, match="finetune_dataset"):
        resolve_config("ci", finetune_dataset="kinetics400")


def test_transfer_sections_follow_the_paper_and_name_bad_values():
    paper = resolve_config("paper_r18")
    d, a = paper.detection, paper.anticipation
    assert (d.detection_epochs, d.detection_lr, d.detection_milestones, d.detection_weight_decay) == (24, 0.1, (16, 22), 1e-7)
    assert (d.detection_res5_stride, d.detection_res5_dilation, d.iou_threshold) == (1, 2, 0.5)
    assert (a.anticipation_epochs, a.anticipation_lr, a.anticipation_milestones, a.tau_o, a.tau_a) == (80, 0.1, (40, 60), 1.0, 1.0)
    demo = resolve_config("demo", detection_milestones="3,5", tau_a="0.5")
    assert demo.detection.detection_milestones == (3, 5) and demo.anticipation.tau_a == 0.5
    for overrides, message in (({"detection_milestones": (5, 3)}, "detection_milestones"),
                               ({"anticipation_epochs": 0}, "anticipation_epochs"),
                               ({"detection_res5_stride": 3}, "detection_res5_stride"),
                               ({"tau_o": 0}, "tau_o"),
                               ({"proposal_score_threshold": 1.5}, "proposal_score_threshold"),
                               ({"ava_actors": (3, 2)}, "ava_actors"),
                               ({"epic_follow_prob": 2.0}, "epic_follow_prob"),
                               ({"detection_decode_size": (0, 32)}, "detection_decode_size")):
        with pytest.raises(ValueError, match=message):
            resolve_config("ci", **overrides)


TRAINING_NOTEBOOKS = ("05_hierarchical_pretraining", "06_action_recognition", "07_linear_probe_and_retrieval",
                      "08_action_detection", "09_action_anticipation", "10_instance_correspondence_map")


def _parameter_names(notebook: Path) -> set[str]:
    cells = json.loads(notebook.read_text())["cells"]
    source = "".join(next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))["source"])
    return {line.split(":")[0].strip() for line in source.splitlines() if line[:1].isupper()}


@pytest.mark.parametrize("preset", ["paper_r18", "paper_r50"])
def test_every_training_notebook_has_paper_parameter_files_it_accepts(preset):
    folder = ROOT / "notebooks" / "params" / preset
    files = sorted(folder.glob("*.yaml"))
    assert {f.name.split(".")[0] for f in files} == set(TRAINING_NOTEBOOKS)
    for f in files:
        params = yaml.safe_load(f.read_text())
        notebook = ROOT / "notebooks" / f"{f.name.split('.')[0]}.ipynb"
        unknown = set(params) - _parameter_names(notebook)
        assert not unknown, f"{f.name}: {sorted(unknown)} are not parameters of {notebook.name}"
        assert params["PRESET"] == preset and params["DEVICE"] == "cuda"
        assert resolve_config(preset, seed=params["SEED"]).preset == preset
        assert str(params.get("RUN_DIR", "")).startswith(f"../runs/{preset}/")  # papermill runs in notebooks/


def test_config_table_shows_the_run_and_only_the_named_sections():
    from dataclasses import fields

    from vthcl_lib.config import config_table

    cfg = resolve_config("ci", alpha=4, seed=3)
    table = config_table(cfg, ["data", "contrast"])
    assert list(table.index.get_level_values("section").unique()) == ["run", "data", "contrast"]
    assert table.loc[("run", "seed"), "value"] == "3" and table.loc[("run", "preset"), "value"] == "ci"
    assert table.loc[("data", "alpha"), "value"] == "4"
    assert table.loc[("data", "decode_size"), "value"] == "(32, 32)"  # tuples print as written
    assert table.loc[("data", "cache_dir"), "value"] == "None"
    assert len(table) == 4 + len(fields(cfg.data)) + len(fields(cfg.contrast))  # preset, seed, device, run_dir
    assert len(table) < len(str(cfg).splitlines()) / 2  # compact next to print(cfg)
    assert list(config_table(cfg).index.get_level_values("section").unique()) == ["run"]
    for bad in (["dataa"], "data"):
        with pytest.raises(ValueError, match="sections=.*expected a list of sections among data, synthetic"):
            config_table(cfg, bad)


@pytest.mark.parametrize("overrides, message", [
    ({"checkpoint_every": 0}, "checkpoint_every=0"),
    ({"max_steps_per_epoch": -5}, "max_steps_per_epoch=-5"),
    ({"warmup_epochs": -1}, "warmup_epochs=-1"),
    ({"failure_budget": -1}, "failure_budget=-1"),
    ({"lr": float("inf")}, "lr=inf; expected a finite number"),
    ({"lr": "nan"}, "lr=nan"),
    ({"lr": 0}, "lr=0"),
    ({"temperature": 0}, "temperature=0"),
    ({"temperature": "inf"}, "temperature=inf"),
    ({"level_weights": (1.0, 1.0, -1.0)}, "level_weights"),
    ({"level_weights": (1.0, 0.0, 0.0), "levels": 2}, "at least one > 0 among the 2 used"),
    ({"crop_size": 48}, "crop_size=48 is larger than decode_size=.32, 32."),
    ({"num_workers": -2}, "num_workers=-2"),
    ({"momentum": 1.5}, "momentum=1.5"),
    ({"weight_decay": -1e-4}, "weight_decay=-0.0001"),
    ({"micro_batch_size": 0}, "micro_batch_size=0"),
    ({"micro_batch_size": 16}, "micro_batch_size=16"),
    ({"micro_batch_size": 2, "in_batch_negatives": True}, "in_batch_negatives=false"),
    ({"micro_batch_size": 2, "negatives": "per_query"}, "negatives='shared'"),
    ({"grayscale_prob": 1.5}, "grayscale_prob=1.5"),
    ({"std": (0.2, 0.0, 0.2)}, "std="),
    ({"num_test_clips": 0}, "num_test_clips=0"),
    ({"finetune_lr": "inf"}, "finetune_lr=inf"),
    ({"finetune_warmup_epochs": -1}, "finetune_warmup_epochs=-1"),
    ({"detection_momentum": -0.1}, "detection_momentum=-0.1"),
    ({"probe_weight_decay": -1}, "probe_weight_decay=-1"),
    ({"head_hidden": 0}, "head_hidden=0"),
    ({"seed": -1}, "seed=-1"),
])
def test_numeric_settings_are_refused_before_any_data_is_read(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        resolve_config("ci", **overrides)
    # the command line goes through the same validation (strings, as typed)
    with pytest.raises(ValueError, match=message):
        config_from_params({"preset": "ci", **{k: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
                                               for k, v in overrides.items()}})


def test_numeric_edge_values_that_work_are_accepted():
    cfg = resolve_config("ci", max_steps_per_epoch=0, warmup_epochs=0, failure_budget=0, crop_size=32,
                         micro_batch_size=2, level_weights=(0.0, 0.0, 1.0), momentum=0)
    assert cfg.train.max_steps_per_epoch == 0  # 0, like None: no cap
    assert cfg.train.micro_batch_size == 2 and resolve_config("paper_r50", micro_batch_size=32).train.batch_size == 256
