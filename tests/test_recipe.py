"""recipe_hash: what a run computes, apart from its labels, its measurement and where its data lives."""

from __future__ import annotations

import shutil

from harness.config.run import config_hash, load_config, recipe_hash, to_dict
from harness.config.recipe import differing_keys
from support.recipes import CONFIG


def h(*overrides: str) -> str:
    return recipe_hash(load_config(CONFIG, list(overrides)))


def test_labels_output_measurement_and_data_location_are_not_the_recipe(tmp_path):
    base = h()
    for same in (["name=other"], ["output.dir=elsewhere", "output.save_model=false"],
                 ["measure.warmup_steps=3", "measure.repeats=3", "measure.repeat_unit=run"],
                 [f"data.root={tmp_path}"], ["data.scan_images=false"]):
        assert h(*same) == base, same
    assert config_hash(load_config(CONFIG, ["name=other"])) != config_hash(load_config(CONFIG))


def test_what_changes_the_computation_is(tmp_path):
    base = h()
    for other in (["loader.batch_size=32"], ["seed=1"], ["optim.lr=0.001"], ["train.epochs=2"],
                  ["runtime.precision=bf16"], ["data.transforms.augment.rotation_deg=0"], ["data.subset=100"]):
        assert h(*other) != base, other


def test_an_image_folder_is_its_files_not_its_path(tmp_path):
    a = tmp_path / "a"
    for cls in ("cat", "dog"):
        (a / cls).mkdir(parents=True)
        (a / cls / "1.png").write_bytes(b"x" * 10)
    shutil.copytree(a, tmp_path / "b")
    ha, hb = (h("data.name=imagefolder", f"data.root={tmp_path / x}") for x in "ab")
    assert ha == hb
    (tmp_path / "b" / "dog" / "2.png").write_bytes(b"y")
    assert h("data.name=imagefolder", f"data.root={tmp_path / 'b'}") != ha


def test_differing_keys_name_the_recipe_keys_only():
    a = to_dict(load_config(CONFIG))
    b = to_dict(load_config(CONFIG, ["name=x", "loader.batch_size=32", "measure.warmup_steps=2", "seed=3"]))
    assert differing_keys(a, b) == ["loader.batch_size", "seed"]
