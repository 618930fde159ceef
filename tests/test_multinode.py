"""Two torchrun "nodes" on localhost: one run over --nnodes 2, one process each, gloo.

The agents meet at one rendezvous port as two machines would; the report must be one
run of world size 2 whose ranks name their node, host and pid, with the throughput of
the slowest rank.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, TINY
from harness.launch import free_port
from harness.measure.aggregate import per_node
from harness.report import load_report

TIMEOUT_S = 300


def node(rank: int, port: int, out) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
           "--nproc_per_node", "1", "--rdzv_backend", "static", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "harness", "run", "configs/digits_mlp.yaml", *TINY,
           "runtime.device=cpu", "train.epochs=1", "measure.measure_peak=false", "output.checkpoint_every_epoch=false",
           "output.save_model=false", "--output", str(out)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ.copy())


@pytest.mark.slow
@pytest.mark.distributed
def test_two_torchrun_nodes_on_localhost_make_one_report(tmp_path):
    port = free_port()
    procs = [node(r, port, tmp_path) for r in (0, 1)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)

    report = load_report(tmp_path)
    assert report["status"] == "completed"
    assert report["distributed"]["world_size"] == 2
    assert report["distributed"]["backend"] == "gloo"
    ranks = report["per_rank"]
    assert [(r["rank"], r["node_rank"]) for r in ranks] == [(0, 0), (1, 1)]
    assert all(r["hostname"] for r in ranks)
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert [n["ranks"] for n in report["per_node"]] == [[0], [1]]
    # Throughput is every rank's samples over the slowest rank's window, not rank 0's.
    thr = report["throughput"]
    slowest = max(r["window_s"] for r in ranks)
    assert thr["window_s"] == pytest.approx(slowest)
    assert thr["samples_per_s"] == pytest.approx(sum(r["samples"] for r in ranks) / slowest)
    # One report: only rank 0 of node 0 writes and prints.
    assert sum(log.count("best dev accuracy") for log in logs) == 1


def test_per_node_groups_ranks_by_node_and_times_each_by_its_slowest_rank():
    rows = [{"rank": 0, "node_rank": 0, "hostname": "a", "samples": 100, "window_s": 1.0},
            {"rank": 1, "node_rank": 0, "hostname": "a", "samples": 100, "window_s": 2.0},
            {"rank": 2, "node_rank": 1, "hostname": "b", "samples": 100, "window_s": 0.5},
            {"rank": 3, "node_rank": 1, "hostname": "b", "samples": 100, "window_s": 0.5}]
    assert per_node(rows) == [
        {"node_rank": 0, "hostname": "a", "ranks": [0, 1], "samples_per_s": 100.0},
        {"node_rank": 1, "hostname": "b", "ranks": [2, 3], "samples_per_s": 400.0},
    ]
