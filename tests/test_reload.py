"""harness evaluate and predict on a finished run: the run's figures reproduced, bad input named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from support.paths import REPO
from support.recipes import TINY
from harness.cli import main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, harness_cache):
    """A tiny digits run (MLP, two epochs), trained in this process."""
    out = tmp_path_factory.mktemp("run") / "digits"
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    assert main(["run", str(REPO / "configs/digits_mlp.yaml"), *TINY, "--output", str(out)]) == 0
    return out


def _report(run: Path) -> dict:
    return yaml.safe_load((run / "report.yaml").read_text())


def _write_test_split(run: Path, folder: Path) -> int:
    """The run's test split as PNG files, one folder per class (as the pool gives them: RGB)."""
    from harness.config.run import load_config
    from harness.data import build_data

    cfg = load_config(run / "config.yaml")
    data = build_data(cfg.data, cfg.seed)
    for i in data.test.indices:
        image, target = data.test.base[i]
        (folder / data.classes[target]).mkdir(parents=True, exist_ok=True)
        image.save(folder / data.classes[target] / f"{i:04d}.png")
    return len(data.test.indices)


def test_the_run_records_its_class_names(finished_run):
    card = json.loads((finished_run / "classes.json").read_text())
    assert card == {"classes": [str(d) for d in range(10)], "sample_shape": [1, 8, 8]}
    assert _report(finished_run)["data"]["classes"] == card["classes"]
    assert _report(finished_run)["scenario"] == "training"


def test_evaluate_reproduces_the_runs_test_figures_exactly(finished_run):
    assert main(["evaluate", str(finished_run)]) == 0
    ev = yaml.safe_load((finished_run / "eval-test.yaml").read_text())
    acc = _report(finished_run)["accuracy"]
    assert ev["accuracy"] == acc["test_accuracy"]
    assert ev["loss"] == acc["test_loss"]  # exactly: same split, loader, loss and summation order
    assert ev["samples"] == acc["test_samples"]
    assert sum(map(sum, ev["confusion_matrix"])) == ev["samples"]
    assert sum(ev["confusion_matrix"][i][i] for i in range(10)) == round(ev["accuracy"] * ev["samples"])
    assert [v["samples"] for v in ev["per_class"].values()] == [sum(row) for row in ev["confusion_matrix"]]
    assert ev["run_report"] == {"test_accuracy": acc["test_accuracy"], "test_loss": acc["test_loss"]}


def test_predict_gives_evaluates_argmax_for_every_test_image(finished_run, tmp_path, capsys):
    from harness.infer.evaluate import evaluate_run
    from harness.infer.reload import open_run

    folder = tmp_path / "test_split"
    n = _write_test_split(finished_run, folder)
    run = open_run(finished_run, ["data.name=imagefolder", f"data.root={folder}"])
    ev = evaluate_run(run, "all")
    # The PNG round trip is lossless: the same images give the run's own test accuracy.
    assert ev["samples"] == n
    assert ev["accuracy"] == _report(finished_run)["accuracy"]["test_accuracy"]
    files = sorted(p for p in folder.rglob("*.png"))  # ImageFolder's order: class folder, then name
    by_evaluate = {str(p): run.classes[k] for p, k in zip(files, ev["_predictions"])}

    capsys.readouterr()
    assert main(["predict", str(finished_run), str(folder), "--format", "json", "--top-k", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == n
    assert {r["image"]: r["top"][0]["class"] for r in rows} == by_evaluate
    for r in rows:
        assert 1 >= r["top"][0]["probability"] >= r["top"][1]["probability"] >= 0


def test_evaluate_refuses_a_class_the_model_never_saw(finished_run, tmp_path, capsys):
    digits = Path(_report(finished_run)["data"]["source"].split(":", 1)[1])
    for name, src in (("3", "3"), ("7", "7"), ("cat", "5")):
        shutil.copytree(digits / src, tmp_path / "folder" / name)
    before = sorted(p.name for p in finished_run.iterdir())
    code = main(["evaluate", str(finished_run), "data.name=imagefolder", f"data.root={tmp_path / 'folder'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "'cat'" in err and "never saw" in err
    assert sorted(p.name for p in finished_run.iterdir()) == before  # nothing written


def test_evaluate_maps_a_folder_of_some_classes_by_name(finished_run, tmp_path, capsys):
    digits = Path(_report(finished_run)["data"]["source"].split(":", 1)[1])
    for name in ("3", "7"):  # folder indices 0 and 1: the model's outputs 3 and 7
        (tmp_path / "two" / name).mkdir(parents=True)
        for f in sorted((digits / name).iterdir())[:5]:
            shutil.copy(f, tmp_path / "two" / name / f.name)
    out = tmp_path / "ev"
    assert main(["evaluate", str(finished_run), "data.name=imagefolder", f"data.root={tmp_path / 'two'}",
                 "--output", str(out)]) == 0
    ev = yaml.safe_load((out / "eval.yaml").read_text())
    assert ev["samples"] == 10 and ev["data"]["split"] == "all"
    assert [c for c, v in ev["per_class"].items() if v["samples"]] == ["3", "7"]


def test_predict_names_a_file_that_is_not_an_image(finished_run, tmp_path, capsys):
    digits = Path(_report(finished_run)["data"]["source"].split(":", 1)[1])
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(digits / "3" / sorted(p.name for p in (digits / "3").iterdir())[0], folder / "a.png")
    shutil.copy(digits / "7" / sorted(p.name for p in (digits / "7").iterdir())[0], folder / "b.png")
    (folder / "notes.txt").write_text("not a picture\n")
    capsys.readouterr()
    assert main(["predict", str(finished_run), str(folder)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "notes.txt" in err

    assert main(["predict", str(finished_run), str(folder), "--skip-bad", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0].startswith("image,class_1,probability_1")
    assert [line.split(",")[0] for line in lines[1:]] == [str(folder / "a.png"), str(folder / "b.png")]
    assert "notes.txt" in err


def test_predict_names_an_image_of_another_channel_count(tmp_path, capsys):
    """A model trained on one-channel pictures (FakeData, no grayscale step) and an RGB file."""
    from PIL import Image

    out = tmp_path / "run"
    assert main(["run", "data.name=fake", "data.fake.size=40", "data.fake.image_shape=[1,8,8]",
                 "data.fake.num_classes=3", "model.name=mlp", "train.max_steps=1", "train.epochs=1",
                 "measure.warmup_steps=0", "measure.count_flops=false", "output.progress=false",
                 "--output", str(out)]) == 0
    Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / "colour.png")
    Image.new("L", (8, 8), 90).save(tmp_path / "grey.png")
    capsys.readouterr()
    assert main(["predict", str(out), str(tmp_path / "colour.png"), str(tmp_path / "grey.png")]) == 2
    err = capsys.readouterr().err
    assert "colour.png" in err and "3x8x8" in err and "1x8x8" in err
    assert main(["predict", str(out), str(tmp_path / "grey.png"), "--top-k", "5"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 2 and rows[0].split() == ["image", "top", "1", "top", "2", "top", "3"]


def test_evaluate_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err
