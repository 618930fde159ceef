"""The regression gate on real ``harness run`` reports.

The candidate's steps sleep 6x longer than the baseline's (300 ms against 50 ms, on a
model whose own compute is a few ms), so a busy machine (load 4-6 on 2 cores) cannot
close the gap: checked with two CPU-bound processes running beside the tests.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support.cli import run_cli, run_in_process
from support.groups import one_worker
from support.paths import TESTS_PATH
from support.threads import one_torch_thread

RECIPE = ["configs/digits_cnn.yaml", "data.subset=360", "train.epochs=1", "measure.warmup_steps=1",
          "loader.batch_size=32", "output.progress=false", "output.save_model=false",
          "output.checkpoint_every_epoch=false", "measure.count_flops=false", "measure.measure_peak=false",
          "model.name=fixtures.gate_models:Sleepy"]
BASE_SLEEP_MS, CAND_SLEEP_MS = "50", "300"
pytestmark = one_worker(__name__)  # its baseline runs are made once


def harness_run(out: Path, *extra: str, sleep_ms: str = BASE_SLEEP_MS):
    # One torch thread: this model's compute is a few ms a step, and two threads on a busy
    # 2-core machine spin (a tiny run's CPU time halves with one).
    return run_cli("run", *RECIPE, *extra, "--output", str(out),
                   env={"PYTHONPATH": TESTS_PATH, "HARNESS_TEST_STEP_SLEEP_MS": sleep_ms, "HARNESS_TEST_FAIL_AT": "0",
                        "OMP_NUM_THREADS": "1"})


def compare(*args: str):
    proc = run_cli("compare", *map(str, args), "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_metric(result: dict) -> dict:
    return {r["metric"]: r for r in result["rows"]}


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """A baseline of two cells, the first recipe again under another name and folder, and a broken run."""
    root = tmp_path_factory.mktemp("gate")
    runs = {  # name: (folder, overrides, the training forward that raises; "0": none)
        "base_a": (root / "base" / "a", [], "0"),
        "base_b": (root / "base" / "b", ["loader.batch_size=16"], "0"),
        "renamed": (root / "elsewhere" / "renamed", ["name=renamed_recipe"], "0"),
        "failed": (root / "failed", [], "3"),
    }
    # In this process, one after another: the tests read verdicts and names, never a speed
    # between these runs, so no process of their own is needed (each would cost ~3 s of
    # CPU in imports, more than the run). The model reads its sleep and its failing step
    # from the environment at each forward.
    with pytest.MonkeyPatch.context() as env, one_torch_thread():
        env.setenv("HARNESS_TEST_STEP_SLEEP_MS", BASE_SLEEP_MS)
        for name, (out, overrides, fail_at) in runs.items():
            env.setenv("HARNESS_TEST_FAIL_AT", fail_at)
            assert run_in_process(RECIPE, out, *overrides) == (0 if fail_at == "0" else 1), name
    return root


@pytest.mark.slow
def test_a_failed_candidate_fails_the_gate(cells):
    code, result = compare(cells / "base" / "a", cells / "failed")
    assert code == 1
    (row,) = [r for r in result["rows"] if r["verdict"] == "failed"]
    assert "broken candidate" in row["note"] and result["counts"]["failed"] == 1


@pytest.mark.slow
def test_a_missing_cell_fails_unless_allowed_and_names_match_on_the_recipe(cells):
    code, result = compare(cells / "base", cells / "elsewhere")
    assert code == 1
    assert result["counts"]["compared"] == 1 and result["counts"]["missing"] == 1
    (missing,) = [r for r in result["rows"] if r["verdict"] == "missing"]
    assert "bs=16" in missing["cell"] and "differs in loader.batch_size" in missing["note"]
    proc = run_cli("compare", str(cells / "base"), str(cells / "elsewhere"), "--allow-missing")
    assert proc.returncode == 0, proc.stdout
    # The renamed run, in another folder, is the same recipe as base/a: matched, not "new".
    assert "0 new" in proc.stdout and "1 cell(s) compared" in proc.stdout


@pytest.fixture(scope="module")
def repeats(tmp_path_factory):
    """5 whole-run repeats of the baseline and of a candidate whose steps sleep 6x longer."""
    root = tmp_path_factory.mktemp("repeats")
    # The two sides run at once (each side's five runs one after another): the verdict needs
    # only the order of the runs, which the 250 ms extra sleep per step fixes whatever the
    # load, and the suite saves half a minute.
    with ThreadPoolExecutor(2) as pool:
        procs = {side: pool.submit(harness_run, root / side, "measure.repeat_unit=run", "measure.repeats=5",
                                   sleep_ms=sleep_ms)
                 for side, sleep_ms in (("base", BASE_SLEEP_MS), ("cand", CAND_SLEEP_MS))}
    for side, proc in procs.items():
        assert proc.result().returncode == 0, (side, proc.result().stderr[-2000:])
    return root


def _pick(root: Path, side: str, runs: tuple[int, ...], to: str) -> Path:
    """Copies of some of a side's whole-run repeats: several reports of one cell."""
    for k in runs:
        shutil.copytree(root / side / f"repeat_{k:02d}", root / to / f"repeat{k}")
    return root / to


@pytest.mark.slow
def test_five_against_five_slower_runs_is_a_regression(repeats):
    code, result = compare(repeats / "base", repeats / "cand")
    rows = by_metric(result)
    assert code == 1
    for metric in ("samples/s", "step time p50 (ms)"):
        assert rows[metric]["verdict"] == "regression" and "n=5/5" in rows[metric]["note"], rows[metric]
    # No bound on the ratio itself: samples/s includes the wait for data, which a busy
    # machine slows as much as anything (a 0.5 bound failed under two CPU burners). The
    # verdict needs only the order of the runs, which the 250 ms extra sleep per step fixes.
    assert rows["samples/s"]["candidate"] < rows["samples/s"]["baseline"]
    assert rows["test accuracy"]["verdict"] == "ok"  # the same training, only slower


@pytest.mark.slow
def test_two_against_two_is_suspicious_and_strict_fails_it(repeats):
    base, cand = _pick(repeats, "base", (1, 2), "base2"), _pick(repeats, "cand", (1, 2), "cand2")
    code, result = compare(base, cand)
    s = by_metric(result)["samples/s"]
    assert code == 0 and s["verdict"] == "suspicious" and "needs >=4 repeats per side" in s["note"]
    assert run_cli("compare", str(base), str(cand), "--strict").returncode == 1


@pytest.mark.slow
def test_a_a_is_ok(repeats):
    code, result = compare(repeats / "base", repeats / "base")
    assert code == 0 and {r["verdict"] for r in result["rows"]} == {"ok"}
    # Distinct runs of one recipe (2 against 3): never a regression, and the
    # computation itself (accuracy) is identical.
    code, result = compare(_pick(repeats, "base", (1, 2), "aa1"), _pick(repeats, "base", (3, 4, 5), "aa2"))
    rows = by_metric(result)
    assert code == 0 and rows["test accuracy"]["verdict"] == "ok" and rows["test accuracy"]["change"] == "+0.00 pt"
    assert not {r["verdict"] for r in result["rows"]} & {"regression", "failed", "missing", "new"}
