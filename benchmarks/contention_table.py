"""The measured tables behind the contention verdict and the threads warning.

    python benchmarks/contention_table.py contention [--rounds 3] [--epochs 2]
    python benchmarks/contention_table.py threads [--rounds 2] [--threads 1,2,4]

Each row starts 0, 1 or 2 CPU-bound processes (``yes >/dev/null``) beside a ``harness run``
of configs/digits_cnn.yaml (``OMP_NUM_THREADS`` sets its torch threads), reads the
report's ``contention`` block and ``throughput.samples_per_s``, and stops them. Rounds
go through the rows in turn, so a drift of the machine falls on every row alike. The
machine's 1-minute load average before each round is printed with it: a row "0 beside
it" is only as idle as the machine was (docs/report.md, docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.report.io import load_report

REPO = Path(__file__).resolve().parent.parent


def run_once(hogs: int, threads: int | None, epochs: int, out: Path) -> dict:
    beside = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(hogs)]
    try:
        load = os.getloadavg()[0]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        subprocess.run([sys.executable, "-m", "harness", "run", str(REPO / "configs" / "digits_cnn.yaml"),
                        f"train.epochs={epochs}", "output.progress=false", "output.save_model=false",
                        "output.checkpoint_every_epoch=false", "measure.measure_peak=false",
                        "--output", str(out), "--overwrite"],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        for p in beside:
            p.kill()
            p.wait()
    report = load_report(out / "report.yaml")
    c = report["contention"]
    return {"foreign": c["foreign_cpu_fraction"], "verdict": c["verdict"], "load_before": load,
            "samples_per_s": report["throughput"]["samples_per_s"],
            "torch_threads": report["threads"]["torch_threads"]}


def table(rows: dict, label: str) -> str:
    lines = [f"| {label} | hogs | runs | foreign_cpu_fraction median (range) | verdicts | samples/s median "
             "| load avg before (range) |", "|---|---|---|---|---|---|---|"]
    for (name, hogs), runs in rows.items():
        f = [r["foreign"] for r in runs]
        s = [r["samples_per_s"] for r in runs]
        loads = [r["load_before"] for r in runs]
        verdicts = ",".join(sorted({r["verdict"] for r in runs}))
        lines.append(f"| {name} | {hogs} | {len(runs)} | {statistics.median(f):.2f} ({min(f):.2f}-{max(f):.2f}) "
                     f"| {verdicts} | {statistics.median(s):.0f} | {min(loads):.1f}-{max(loads):.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["contention", "threads"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", default="1,2,4")
    ap.add_argument("--hogs", default="0,1,2")
    args = ap.parse_args()
    hogs = [int(h) for h in args.hogs.split(",")]
    threads = [None] if args.what == "contention" else [int(t) for t in args.threads.split(",")]
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for t in threads:
                for h in hogs:
                    r = run_once(h, t, args.epochs, Path(tmp) / "run")
                    rows.setdefault((t or "default", h), []).append(r)
                    print(f"round {k + 1} threads {t or 'default'} hogs {h}: foreign {r['foreign']:.2f} "
                          f"({r['verdict']}), {r['samples_per_s']:.0f} samples/s, load before "
                          f"{r['load_before']:.2f}", file=sys.stderr, flush=True)
    print(f"{os.cpu_count()} CPUs; configs/digits_cnn.yaml, {args.epochs} epochs, {args.rounds} round(s)")
    print(table(rows, "torch threads"))


if __name__ == "__main__":
    main()
