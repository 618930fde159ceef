"""Property: any value at any config key is either accepted or refused with the one-line error.

Hypothesis puts random values (numbers of every size and sign, NaN and infinities,
strings, booleans, null, lists, mappings) at every key of the config, one key or
several at a time, in a YAML file and as ``KEY=VALUE`` overrides. The loader must
return a Config or raise ``BadInput`` with one line that names the key: never a
traceback of another kind.

The examples are derandomized (the same every run: tests/conftest.py's default
profile), so CI is deterministic; to search afresh, run
``pytest tests/test_config_property.py --hypothesis-profile=explore``.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config.run import Config, load_config
from harness.errors import BadInput


def leaf_keys(cls=Config, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += leaf_keys(tp, dotted + ".")
        else:
            keys.append(dotted)
    return keys


KEYS = leaf_keys()
SECTIONS = sorted({k.rsplit(".", 1)[0] for k in KEYS if "." in k})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2.0, max_value=2.0),
    st.text(max_size=12),
    st.sampled_from(["cnn", "mlp", "adam", "sgd", "cosine", "digits", "fake", "bf16", "fp16", "skip",
                     "os:getcwd", "no.such.module:X", "auto", "cpu", "gpu", "device_resident"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
# Keys that exist, keys one letter off, and whole sections given a non-mapping value.
some_key = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(lambda k: k + "x"),
                     st.sampled_from(SECTIONS))


def set_dotted(raw: dict, key: str, value) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def check_outcome(load) -> None:
    try:
        cfg = load()
    except BadInput as err:
        message = str(err)
        assert message and "\n" not in message, f"not one line: {message!r}"
        return
    assert isinstance(cfg, Config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assignments=st.lists(st.tuples(some_key, values), min_size=1, max_size=4))
def test_yaml_file_with_random_values(tmp_path: Path, assignments):
    raw: dict = {}
    for key, value in assignments:
        set_dotted(raw, key, value)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    check_outcome(lambda: load_config(path))


@settings(max_examples=300, deadline=None)
@given(key=some_key, value=values)
def test_override_with_random_values(key, value):
    text = f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
    check_outcome(lambda: load_config("configs/digits_cnn.yaml", [text]))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30))
def test_override_text_of_any_shape(text):
    check_outcome(lambda: load_config(None, [text]))


def test_the_refusal_names_the_key():
    """The property above checks the shape of every refusal; here, its content, for each key."""
    for key in KEYS:
        try:
            load_config(None, [f"{key}=[[1, 2], {{a: 3}}]"])
        except BadInput as err:
            assert key in str(err), (key, str(err))
