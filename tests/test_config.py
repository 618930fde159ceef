"""The strict config loader: every kind of refusal names the file and the dotted key."""

from __future__ import annotations

import pytest

from harness.config.run import Config, config_hash, load_config
from harness.errors import BadInput


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def refused(path, *overrides) -> str:
    with pytest.raises(BadInput) as info:
        load_config(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_load():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.loader.batch_size == 64


def test_shipped_default_is_digits_cnn():
    cfg = load_config("configs/digits_cnn.yaml")
    assert (cfg.data.name, cfg.model.name) == ("digits", "cnn")


def test_unknown_key(tmp_path):
    msg = refused(write(tmp_path, "loader:\n  batch_sise: 8\n"))
    assert "c.yaml" in msg and "loader.batch_sise: unknown key" in msg and "batch_size" in msg


def test_unknown_section(tmp_path):
    assert "trainer: unknown key" in refused(write(tmp_path, "trainer: {epochs: 1}\n"))


def test_wrong_type(tmp_path):
    msg = refused(write(tmp_path, "loader:\n  batch_size: many\n"))
    assert "loader.batch_size: expected an integer, got 'many'" in msg


def test_bool_is_not_an_integer(tmp_path):
    assert "loader.batch_size" in refused(write(tmp_path, "loader: {batch_size: true}\n"))


def test_out_of_range_batch_size(tmp_path):
    msg = refused(write(tmp_path, "loader: {batch_size: -4}\n"))
    assert "loader.batch_size: expected an integer > 0, got -4" in msg


def test_zero_batch_size_override():
    assert "loader.batch_size" in refused(None, "loader.batch_size=0")


def test_split_must_sum_to_one(tmp_path):
    msg = refused(write(tmp_path, "data: {split: {train: 0.7, dev: 0.2, test: 0.2}}\n"))
    assert "data.split" in msg and "sum to 1" in msg


def test_negative_learning_rate():
    assert "optim.lr: expected a learning rate > 0" in refused(None, "optim.lr=-0.1")


@pytest.mark.parametrize("override, key", [
    ("model.name=transformer9000", "model.name: unknown model"),
    ("data.name=imagenet", "data.name: unknown data set"),
    ("optim.name=adamx", "optim.name: expected one of"),
    ("optim.scheduler.name=linear", "optim.scheduler.name: expected one of"),
    ("runtime.precision=fp8", "runtime.precision: expected one of"),
])
def test_unknown_names(override, key):
    assert key in refused(None, override)


def test_malformed_yaml(tmp_path):
    msg = refused(write(tmp_path, "loader: [batch_size: 3\n"))
    assert "c.yaml: malformed YAML at line" in msg


def test_top_level_must_be_mapping(tmp_path):
    assert "expected a mapping" in refused(write(tmp_path, "- 1\n- 2\n"))


def test_missing_file(tmp_path):
    assert "no such config file" in refused(tmp_path / "nope.yaml")


def test_overrides_apply_and_parse_yaml_values():
    cfg = load_config("configs/digits_cnn.yaml", ["loader.batch_size=128", "data.split.dev=0.1",
                                                  "data.split.test=0.2", "model.kwargs={dropout: 0.5}"])
    assert cfg.loader.batch_size == 128
    assert cfg.data.split.dev == 0.1
    assert cfg.model.kwargs == {"dropout": 0.5}


def test_override_without_equals():
    from harness.config.run import parse_override

    with pytest.raises(BadInput, match="expected KEY=VALUE"):
        parse_override("loader.batch_size")


def test_override_into_a_scalar_is_refused():
    assert "loader.batch_size: expected an integer" in refused(None, "loader.batch_size.x=1")


def test_int_accepted_for_float():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


def test_dependent_checks():
    assert "loader.prefetch_factor: needs num_workers > 0" in refused(None, "loader.prefetch_factor=2")
    assert "train.stop_at_target: needs train.target_accuracy" in refused(None, "train.stop_at_target=true")


def test_config_hash_ignores_output_but_not_recipe():
    a = load_config(None)
    b = load_config(None, ["output.dir=elsewhere"])
    c = load_config(None, ["loader.batch_size=32"])
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)


def test_a_key_with_a_newline_is_refused_on_one_line(tmp_path):
    """Found by the property test: {data: {"\\n": null}} gave a two-line message."""
    path = tmp_path / "c.yaml"
    path.write_text('data: {"\\n": null}\n')
    with pytest.raises(BadInput) as err:
        load_config(path)
    assert "\n" not in str(err.value) and "data.'\\n': unknown key" in str(err.value)


@pytest.mark.parametrize("written, value", [("3e-4", 3e-4), ("1e5", 1e5), ("1.0e-3", 1e-3), ("2E+2", 200.0)])
def test_exponent_numbers_are_numbers_in_files_and_overrides(tmp_path, written, value):
    """YAML 1.1 reads 3e-4 as a string; every ML user writes it as a number."""
    from harness.config.run import parse_override

    assert load_config(write(tmp_path, f"optim:\n  lr: {written}\n")).optim.lr == value
    assert load_config(None, [f"optim.lr={written}"]).optim.lr == value
    assert parse_override(f"x=-{written}")[1] == -value


def test_strings_that_look_like_numbers_stay_strings():
    from harness.config.run import parse_override

    assert parse_override("name=1e")[1] == "1e" and parse_override("name=e5")[1] == "e5"


def test_resize_accepts_one_integer_as_a_square():
    assert load_config(None, ["data.transforms.resize=8"]).data.transforms.resize == [8, 8]
    assert load_config(None, ["data.transforms.resize=[8, 6]"]).data.transforms.resize == [8, 6]


def test_an_override_error_names_the_override_and_a_file_error_the_file(tmp_path):
    path = write(tmp_path, "loader: {batch_size: 8}\nseed: -1\n")
    msg = refused(path, "loader.batch_size=0")
    assert msg.startswith("override 'loader.batch_size=0': loader.batch_size") and "c.yaml" not in msg
    assert refused(path).startswith(f"{path}: seed")
