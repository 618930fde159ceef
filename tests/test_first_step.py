"""Seconds to the first step: the decoded-image cache (data/decoded.py) and the start-up
marks (measure/startup.py) that the report's timing.setup block is made of."""

from __future__ import annotations

import os
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import build_data, decoded
from harness.data.datasets import DataConfig, default_cache, load_pool
from harness.files.safe_yaml import read_yaml
from harness.measure import startup
from support.cli import run_cli, run_in_process
from support.recipes import CONFIG, TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def own_cache(tmp_path, monkeypatch, harness_cache):
    """A decoded cache of this test's own, over the session's digits PNGs (not written again)."""
    load_pool(DataConfig(name="digits"))  # the session's PNGs exist
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return harness_cache / "digits"


def _cfg(root, **kw) -> DataConfig:
    return DataConfig(name="digits", root=str(root), subset=200, **kw)


def _decodes(fn):
    before = decoded.DECODES[0]
    out = fn()
    return out, decoded.DECODES[0] - before


def _samples(bundle, n=16):
    torch.manual_seed(0)
    return torch.stack([bundle.train[i][0] for i in range(n)]), torch.stack([bundle.test[i][0] for i in range(n)])


def test_a_second_load_decodes_nothing_and_gives_the_same_samples(own_cache, monkeypatch):
    first, n1 = _decodes(lambda: build_data(_cfg(own_cache), seed=0))
    again, n2 = _decodes(lambda: build_data(_cfg(own_cache), seed=0))
    assert n1 == 1797 and n2 == 0  # the scan decodes every file of the pool once, then none
    assert again.train.base.decoded_cache == "hit"
    monkeypatch.setenv(decoded.ENV, "0")
    plain, n3 = _decodes(lambda: build_data(_cfg(own_cache), seed=0))
    assert n3 == 1797 and plain.train.base.decoded_cache == "off"
    for a, b, c in zip(_samples(first), _samples(again), _samples(plain)):
        assert torch.equal(a, b) and torch.equal(a, c)  # bit-identical, augmented train samples too


@pytest.mark.parametrize("damage", ["truncate", "flip", "other_key"])
def test_a_damaged_or_mismatched_entry_is_ignored_and_rewritten(own_cache, damage):
    first = load_pool(_cfg(own_cache))
    [entry] = list(decoded.cache_file(default_cache(), "x").parent.glob("*.pt"))
    blob = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":  # a pixel changed inside the stored tensor: the sha256 no longer matches
        raw = torch.load(entry, weights_only=True)
        raw["pixels"][5] ^= 0xFF
        torch.save(raw, entry)
    else:  # a whole entry, of other files, under this key's name
        raw = torch.load(entry, weights_only=True)
        raw["key"] = "0" * 64
        torch.save(raw, entry)
    again, n = _decodes(lambda: load_pool(_cfg(own_cache)))
    assert n == 1797 and again.dataset.decoded_cache == "written"
    assert torch.load(entry, weights_only=True)["key"] == decoded.fingerprint(first.dataset.samples)
    i = 7
    assert (np.asarray(again.dataset[i][0]) == np.asarray(first.dataset[i][0])).all()


def test_a_changed_file_changes_the_key(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"x")
    k1 = decoded.fingerprint([(str(f), 0)])
    f.write_bytes(b"xy")
    assert decoded.fingerprint([(str(f), 0)]) != k1
    assert decoded.fingerprint([(str(f), 1)]) != decoded.fingerprint([(str(f), 0)])
    # Same size, same modification time, other bytes (cp -p, rsync -t): another key.
    stamp = f.stat().st_mtime_ns
    key = decoded.fingerprint([(str(f), 0)])
    f.write_bytes(b"xz")
    os.utime(f, ns=(stamp, stamp))
    assert decoded.fingerprint([(str(f), 0)]) != key


def _hashes(fn):
    before = decoded.HASHED[0]
    out = fn()
    return out, decoded.HASHED[0] - before


def _rewrite_keeping_size_and_mtime(f, data: bytes):
    """``cp -p`` of other bytes of the same size: only the change time (ctime) tells."""
    st = f.stat()
    assert len(data) == st.st_size
    time.sleep(0.05)  # past the coarse clock's tick (<= 10 ms) that stamps the ctime
    f.write_bytes(data)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_unchanged_set_is_keyed_from_its_stat_and_a_rewritten_file_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setattr(decoded, "SETTLED_S", 0.0)  # these files, just written, count as settled
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, f in enumerate(files):
        f.write_bytes(b"ab" if i else b"cd")
    samples, cache = [(str(f), i) for i, f in enumerate(files)], tmp_path / "cache"
    key, n1 = _hashes(lambda: decoded.content_key(samples, cache))
    again, n2 = _hashes(lambda: decoded.content_key(samples, cache))
    assert key == again == decoded.fingerprint(samples) and n1 == 1 and n2 == 0
    _rewrite_keeping_size_and_mtime(files[1], b"xy")
    changed, n3 = _hashes(lambda: decoded.content_key(samples, cache))
    assert n3 == 1 and changed == decoded.fingerprint(samples) != key
    # A damaged memo is hashed past, not believed.
    for memo in (cache / "decoded").glob("*.key"):
        memo.write_text("0" * 64 + " " + "f" * 64 + "\n")
    same, n4 = _hashes(lambda: decoded.content_key(samples, cache))
    assert same == changed and n4 == 1


def test_files_changed_within_the_settling_time_are_hashed_every_time(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"ab")  # just now: a second change within the clock's tick could keep its ctime
    samples, cache = [(str(f), 0)], tmp_path / "cache"
    _, n = _hashes(lambda: [decoded.content_key(samples, cache) for _ in range(2)])
    assert n == 2 and not list(cache.glob("decoded/*.key"))


def test_a_changed_image_in_a_warm_cache_is_decoded_again_not_served_stale(own_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(decoded, "SETTLED_S", 0.0)
    root = tmp_path / "digits"
    shutil.copytree(own_cache, root)
    first, n1 = _decodes(lambda: load_pool(_cfg(root)))
    (again, n2), hashed = _hashes(lambda: _decodes(lambda: load_pool(_cfg(root))))
    assert n1 == 1797 and n2 == 0 and hashed == 0 and again.dataset.decoded_cache == "hit"
    # Another digit's image in place of the first, at the first's size and modification time.
    paths = [p for p, _ in first.dataset.samples]
    target = Path(paths[0])
    other = next(Path(p) for p in paths[1:] if Path(p).stat().st_size == target.stat().st_size
                 and Path(p).read_bytes() != target.read_bytes())
    with Image.open(other) as img:
        expected = np.asarray(img.convert("RGB"))
    _rewrite_keeping_size_and_mtime(target, other.read_bytes())
    changed, n3 = _decodes(lambda: load_pool(_cfg(root)))
    assert n3 == 1797 and changed.dataset.decoded_cache == "written"
    assert (np.asarray(changed.dataset[0][0]) == expected).all()
    assert not (np.asarray(first.dataset[0][0]) == expected).all()


def test_setup_phases_add_up_to_the_first_step(monkeypatch):
    ages = iter([2.0, 2.5, 3.0, 4.0, 4.25, 5.0, 5.5, 9.9, 10.0])
    monkeypatch.setattr(startup, "process_age_s", lambda: next(ages))
    monkeypatch.setattr(startup, "started_as_harness", lambda: True)
    startup.mark_imported()  # 2.0
    clock = startup.SetupClock()  # 2.5: the config was read
    for phase in ("accelerator_s", "data_s", "model_s", "prepare_s"):
        clock.mark(phase)
    clock.before_step(0)  # 5.5
    clock.before_step(1)  # a later step moves nothing
    total, phases = clock.block()
    assert total == 5.5
    assert phases == {"import_s": 2.0, "config_s": 0.5, "accelerator_s": 0.5, "data_s": 1.0,
                      "model_s": 0.25, "prepare_s": 0.75, "observers_s": 0.5}
    # The next run of this process did not start it: no import, config or total.
    later = startup.SetupClock()
    later.before_step(0)
    assert later.block()[0] is None and later.block()[1]["import_s"] is None


def test_process_age_counts_from_the_process_start():
    # This process started before the test ran, and cannot be older than its CPU time's owner.
    import time

    import psutil

    age = startup.process_age_s()
    wall = time.time() - psutil.Process().create_time()
    assert age > 0 and abs(age - wall) < 1.5  # create_time anchors on whole-second btime


def test_an_in_process_run_reports_the_phases_and_same_figures_from_the_cache(own_cache, tmp_path):
    run = partial(run_in_process, [CONFIG, *TINY, f"data.root={own_cache}", "train.epochs=1"])
    _, n1 = _decodes(lambda: run(tmp_path / "a"))
    code, n2 = _decodes(lambda: run(tmp_path / "b"))
    assert code == 0 and n1 > 0 and n2 == 0
    a, b = (read_yaml(tmp_path / d / "report.yaml") for d in "ab")
    assert a["accuracy"]["dev"] == b["accuracy"]["dev"] and a["accuracy"]["test_loss"] == b["accuracy"]["test_loss"]
    timing = b["timing"]
    # The test process started long before this run: no whole-process figure, but its phases.
    assert timing["process_start_to_first_step_s"] is None
    assert set(timing["setup"]) == set(startup.PHASES)
    assert all(timing["setup"][p] >= 0 for p in ("accelerator_s", "data_s", "model_s", "prepare_s", "observers_s"))


@pytest.mark.slow
def test_harness_run_reports_seconds_from_its_process_start(tmp_path, own_cache):
    out = tmp_path / "run"
    proc = run_cli("run", CONFIG, *TINY, "train.max_steps=2", f"data.root={own_cache}", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    timing = read_yaml(out / "report.yaml")["timing"]
    total, phases = timing["process_start_to_first_step_s"], timing["setup"]
    assert None not in phases.values()
    assert sum(phases.values()) == pytest.approx(total, abs=0.002)  # rounding of 7 phases
    # Importing torch alone takes far more than a clock tick; the setup_s the runner times
    # (build to the end of its setup) lies inside the same span.
    assert phases["import_s"] > 0.1 and total > timing["setup_s"]


def test_the_collector_is_paused_inside_and_collects_the_cycles_on_the_way_out(monkeypatch):
    import gc
    import weakref

    class Node:
        pass

    monkeypatch.setattr(startup, "started_as_harness", lambda: True)
    assert gc.isenabled()
    with startup.collector_paused():
        assert not gc.isenabled()
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None
    assert gc.isenabled() and gone() is None  # the one collection on the way out freed it
    # A caller that turned the collector off keeps it off; so does a process that is not `harness`.
    gc.disable()
    try:
        with startup.collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    monkeypatch.setattr(startup, "started_as_harness", lambda: False)
    with startup.collector_paused():
        assert gc.isenabled()
