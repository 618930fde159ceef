"""python -m scripts.gpu_check [--output DIR] | --judge FIGURES_JSON (scripts/gpu-check.sh runs it).

Without CUDA: one line saying there is nothing to check, exit 0. With it: the ``gpu``-marked
tests, the meter's figures (measure.py, in a process of its own), the harness runs
(runs.py), then one table of every figure against its bound; exit 1 when one does not hold.
The figures are kept in ``DIR/figures.json``; ``--judge`` prints that file's table again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from scripts.gpu_check.verdicts import exit_status, judge, table

REPO = Path(__file__).resolve().parents[2]
TESTS_TIMEOUT_S = 360
MEASURE_TIMEOUT_S = 120
NO_GPU = "no GPU: nothing to check (torch.cuda.is_available() is False here; the gpu-marked tests skip without CUDA)"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def junit_counts(path: Path) -> dict:
    """passed/failed/errors/skipped from pytest's junit XML (one or more test suites)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    return {"passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
            "failed": total["failures"], "errors": total["errors"], "skipped": total["skipped"]}


def gpu_tests(out: Path) -> dict:
    """Every gpu-marked test under tests/, its output passed through to stderr as it runs."""
    from scripts.gpu_check.runs import bounded, time_left

    xml = out / "gpu-tests.xml"
    xml.unlink(missing_ok=True)
    limit = time_left(TESTS_TIMEOUT_S)
    try:
        proc = bounded([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={xml}", "tests"], limit, capture=False, cwd=REPO, env=_env())
    except subprocess.TimeoutExpired:
        return {"tests": {"error": f"pytest -m gpu ran past {limit:.0f} s"}}
    if not xml.exists():
        return {"tests": {"error": f"pytest -m gpu exited {proc.returncode} without a result file"}}
    return {"tests": junit_counts(xml)}


def meter_figures() -> dict:
    from scripts.gpu_check.runs import bounded, last_error, time_left

    limit = time_left(MEASURE_TIMEOUT_S)
    try:
        proc = bounded([sys.executable, "-m", "scripts.gpu_check.measure"], limit, cwd=REPO, env=_env())
    except subprocess.TimeoutExpired:
        return {"error": f"ran past {limit:.0f} s"}
    if proc.returncode != 0:
        return {"error": f"exited {proc.returncode}: {last_error(proc.stderr or '')}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _step(figures: dict, keys: tuple[str, ...], what: str, take) -> None:
    """Record what ``take()`` measured, or its error under each of ``keys``; say how long it took."""
    t0 = time.perf_counter()
    try:
        found = take()
    except Exception as err:  # noqa: BLE001 - one failed figure must not hide the others
        found = {k: {"error": f"{type(err).__name__}: {err}"} for k in keys}
    if set(found) == {"error"}:
        found = {k: found for k in keys}
    figures.update(found)
    print(f"gpu-check: {what} took {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


def check(out: Path) -> dict:
    from scripts.gpu_check import runs

    # SIGTERM ends the check as Ctrl-C does: through bounded(), which kills the step under way.
    signal.signal(signal.SIGTERM, _terminated)
    start = time.perf_counter()
    runs.start_clock()
    figures: dict = {}
    _step(figures, ("tests",), "pytest -m gpu", lambda: gpu_tests(out))
    _step(figures, ("sleep_step", "sleep_data_wait", "phase_blocks"), "the meter's figures", meter_figures)
    for keys, take in runs.STEPS:
        _step(figures, keys, take.__name__, lambda take=take: take(out))
    figures["wall_s"] = time.perf_counter() - start
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu-check.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/gpu-check", help="runs and figures.json (default: %(default)s)")
    parser.add_argument("--judge", metavar="FIGURES_JSON", help="judge a recorded figures.json; run nothing")
    args = parser.parse_args(argv)
    if args.judge:
        try:
            figures = json.loads(Path(args.judge).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            print(f"gpu-check: {args.judge}: expected a figures.json, {err}", file=sys.stderr)
            return 2
        if not isinstance(figures, dict):
            print(f"gpu-check: {args.judge}: expected a JSON object of figures", file=sys.stderr)
            return 2
    else:
        import torch

        if not torch.cuda.is_available():
            print(NO_GPU)
            return 0
        out = Path(args.output).resolve()
        out.mkdir(parents=True, exist_ok=True)
        figures = check(out)
        # Named after the runs: the device's name would start a CUDA context in this process first.
        figures["device"] = torch.cuda.get_device_name(0)
        (out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        print(f"figures: {out / 'figures.json'}")
    verdicts = judge(figures)
    print(f"device: {figures.get('device', 'unknown')}")
    print(table(verdicts))
    return exit_status(verdicts)


if __name__ == "__main__":
    sys.exit(main())
