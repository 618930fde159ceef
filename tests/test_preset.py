"""data.transforms.preset: weights through every command: the samples a run trained on are
the samples it is evaluated, predicted and measured on (harness/data/preprocess.py).

squeezenet1_1 from scratch: the smallest torchvision net that refuses the digits' own
8x8 images, so a command that forgets the preset fails here; its DEFAULT weights' preset
(resize 256, crop 224, ImageNet normalisation) is torchvision metadata: nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from support.paths import REPO
from harness.cli import main

DIGITS = str(REPO / "configs/digits_cnn.yaml")
PRESET = ["model.name=torchvision:squeezenet1_1", "data.transforms.preset=weights",
          "data.transforms.grayscale=false", "data.subset=20", "seed=3"]
SHORT = ["train.epochs=1", "train.max_steps=1", "loader.batch_size=2", "measure.warmup_steps=0",
         "output.progress=false", "train.target_accuracy=null", "measure.measure_peak=false"]
ONE_PASS = ["inference.batch_sizes=[2]", "inference.batches=1", "inference.warmup_batches=0"]


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    out = tmp_path_factory.mktemp("preset") / "run"
    assert main(["run", DIGITS, *PRESET, *SHORT, "--output", str(out)]) == 0
    assert _yaml(out / "report.yaml")["data"]["sample_shape"] == [3, 224, 224]
    return out


@pytest.mark.slow  # shares a run trained at 224x224 (~10 s on 2 busy cores)
def test_bench_inference_of_a_run_measures_the_samples_it_trained_on(preset_run):
    assert main(["bench-inference", str(preset_run), *ONE_PASS]) == 0
    inference = _yaml(preset_run / "inference" / "report.yaml")
    assert inference["status"] == "completed"
    assert inference["data"]["sample_shape"] == _yaml(preset_run / "report.yaml")["data"]["sample_shape"]


@pytest.mark.slow  # shares a run trained at 224x224 (~10 s on 2 busy cores)
def test_evaluate_reproduces_a_preset_runs_test_figures(preset_run):
    assert main(["evaluate", str(preset_run)]) == 0
    ev = _yaml(preset_run / "eval-test.yaml")
    acc = _yaml(preset_run / "report.yaml")["accuracy"]
    assert (ev["accuracy"], ev["loss"], ev["samples"]) == (acc["test_accuracy"], acc["test_loss"],
                                                           acc["test_samples"])


@pytest.mark.slow  # shares a run trained at 224x224 (~10 s on 2 busy cores)
def test_predict_feeds_a_file_through_the_weights_own_preprocessing(preset_run, tmp_path, capsys):
    import torchvision.models as tvm

    from harness.infer.predict import load_inputs
    from harness.data.preprocess import recipe_data
    from harness.infer.reload import open_run

    run = open_run(preset_run)
    data = recipe_data(run.cfg)
    digit, _ = data.test.base[data.test.indices[0]]
    digit.save(tmp_path / "digit.png")  # one of the run's own test images, 8x8
    big = Image.effect_noise((300, 260), 40).convert("RGB")
    big.save(tmp_path / "big.png")
    good, bad = load_inputs(run, [tmp_path / "digit.png", tmp_path / "big.png"])
    assert bad == []
    weights = tvm.SqueezeNet1_1_Weights.DEFAULT.transforms()
    assert torch.equal(good[0][1], data.test[0][0])  # as the run tested it
    assert torch.equal(good[1][1], weights(big))  # resize and crop, not ToTensor + Normalize
    capsys.readouterr()
    assert main(["predict", str(preset_run), str(tmp_path / "digit.png")]) == 0
    assert "digit.png" in capsys.readouterr().out


@pytest.mark.slow  # builds squeezenet at 224x224 three times (~10 s on 2 busy cores)
def test_launch_and_bench_inference_take_the_preset_config_validate_takes(tmp_path, capsys):
    config = tmp_path / "preset.yaml"
    body = yaml.safe_load(Path(DIGITS).read_text())
    body["model"] = {"name": "torchvision:squeezenet1_1"}
    body["data"]["transforms"] = {"preset": "weights"}
    body["data"]["subset"] = 20
    config.write_text(yaml.safe_dump(body))
    assert main(["validate", str(config)]) == 0
    # --output of its own: a `make run` before the suite leaves runs/digits_cnn holding a run
    assert main(["launch", "--mode", "cpu", "--dry-run", str(config), "--output", str(tmp_path / "launch")]) == 0
    assert main(["bench-inference", str(config), *ONE_PASS, "--output", str(tmp_path / "inf")]) == 0
    assert _yaml(tmp_path / "inf" / "report.yaml")["data"]["sample_shape"] == [3, 224, 224]


def test_data_built_without_its_preset_is_refused():
    """A command that reached for build_data directly would measure 3x8x8 samples silently."""
    from harness.config.run import load_config
    from harness.data import build_data

    cfg = load_config(DIGITS, PRESET)
    with pytest.raises(ValueError, match="recipe_data"):
        build_data(cfg.data, cfg.seed)
