"""Two "nodes" on localhost: one run over `harness launch --nnodes 2`, one process each, gloo.

Each node's `harness launch` starts its own accelerate launcher (torchrun underneath);
they meet at one static rendezvous port as two machines would. The report must be one
run of world size 2 whose ranks name their node, host and pid, with the throughput of
the slowest rank. The flags themselves are checked in process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support.paths import REPO
from support.recipes import TINY
from harness.errors import BadInput
from harness.launch.command import Nodes, build_command, free_port
from harness.measure.aggregate import per_node
from harness.report.io import load_report

TIMEOUT_S = 300


def node(rank: int, port: int, out) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "harness", "launch", "--mode", "ddp", "--nproc", "1", "--nnodes", "2",
           "--node-rank", str(rank), "--main-address", "127.0.0.1", "--main-port", str(port),
           "configs/digits_mlp.yaml", *TINY, "train.epochs=1", "measure.measure_peak=false",
           "output.checkpoint_every_epoch=false", "output.save_model=false", "--output", str(out)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ.copy())


@pytest.mark.slow
@pytest.mark.distributed
def test_two_harness_launch_nodes_on_localhost_make_one_report(tmp_path):
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


RECIPE = ["configs/digits_mlp.yaml", "--output", "runs/x"]


def launcher_flags(cmd: list[str]) -> list[str]:
    return cmd[cmd.index("harness.launch.accelerate_launch") + 1:cmd.index("-m", 3)]


def test_launch_over_two_nodes_counts_processes_over_all_machines():
    nodes = Nodes(nnodes=2, node_rank=1, main_address="10.0.0.7", main_port=29611)
    flags = launcher_flags(build_command("ddp", 4, RECIPE, nodes=nodes))
    assert flags == ["--multi_gpu", "--num_machines", "2", "--machine_rank", "1", "--num_processes", "8",
                     "--main_process_ip", "10.0.0.7", "--main_process_port", "29611", "--rdzv_backend",
                     "static", "--same_network", "--mixed_precision", "no", "--dynamo_backend", "no"]


def test_one_process_per_node_is_ddp_over_two_nodes_but_not_over_one():
    flags = launcher_flags(build_command("ddp", 1, RECIPE, nodes=Nodes(nnodes=2, main_port=29611)))
    assert flags[flags.index("--num_processes") + 1] == "2"
    with pytest.raises(BadInput, match="--nproc: ddp needs at least 2 processes"):
        build_command("ddp", 1, RECIPE)


def test_one_node_keeps_the_single_machine_command():
    flags = launcher_flags(build_command("ddp", 2, RECIPE, nodes=Nodes(main_port=29612)))
    assert flags[:7] == ["--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                         "--main_process_port", "29612"]
    assert "--machine_rank" not in flags and "--rdzv_backend" not in flags


@pytest.mark.parametrize("mode, nproc, nodes, message", [
    ("ddp", 1, Nodes(nnodes=2), "--main-port: required with --nnodes 2"),
    ("ddp", 1, Nodes(nnodes=2, node_rank=2, main_port=29611), "--node-rank: expected 0 <= rank < --nnodes (2), got 2"),
    ("ddp", 1, Nodes(nnodes=2, node_rank=-1, main_port=29611), "--node-rank: "),
    ("ddp", 2, Nodes(nnodes=0), "--nnodes: expected an integer >= 1, got 0"),
    ("ddp", 2, Nodes(main_port=0), "--main-port: expected a port in 1..65535, got 0"),
    ("ddp", 2, Nodes(main_port=65536), "--main-port: expected a port in 1..65535, got 65536"),
    ("ddp", 1, Nodes(nnodes=2, main_address=" ", main_port=29611), "--main-address: "),
    ("cpu", 1, Nodes(nnodes=2, main_port=29611), "--nnodes: mode cpu runs one process on one node"),
    ("gpu", 1, Nodes(nnodes=2, main_port=29611), "--nnodes: mode gpu runs one process on one node"),
    ("ddp", 1, Nodes(nnodes=2, main_port=29611, rendezvous_timeout_s=0), "--rendezvous-timeout: expected seconds > 0"),
])
def test_bad_node_settings_are_refused_naming_the_option(mode, nproc, nodes, message):
    with pytest.raises(BadInput) as caught:
        build_command(mode, nproc, RECIPE, nodes=nodes)
    assert str(caught.value).startswith(message)


def test_the_cli_refuses_a_missing_port_in_one_line_and_writes_nothing(tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "run"
    code = main(["launch", "--mode", "ddp", "--nproc", "1", "--nnodes", "2", "--node-rank", "1",
                 "configs/digits_mlp.yaml", "--output", str(out)])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --main-port: required with --nnodes 2: every node must name the port rank 0's node listens on"]
    assert not out.exists()


def test_dry_run_prints_the_node_command(capsys):
    from harness.cli import main

    assert main(["launch", "--mode", "ddp", "--nproc", "1", "--nnodes", "2", "--node-rank", "1",
                 "--main-address", "10.0.0.7", "--main-port", "29611", "--dry-run",
                 "configs/digits_mlp.yaml", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "--num_machines 2 --machine_rank 1 --num_processes 2 --main_process_ip 10.0.0.7" in printed


def test_the_rendezvous_wait_is_bounded_by_the_collective_timeout(capsys):
    from harness.cli import main

    assert main(["launch", "--mode", "ddp", "--nproc", "1", "--nnodes", "2", "--node-rank", "1",
                 "--main-port", "29611", "--dry-run", "configs/digits_mlp.yaml", *TINY,
                 "runtime.collective_timeout_s=20"]) == 0
    assert "--rdzv_backend static --same_network --rdzv_conf timeout=20 " in capsys.readouterr().out
    nodes = Nodes(nnodes=2, main_port=29611, rendezvous_timeout_s=2.5)
    flags = launcher_flags(build_command("ddp", 1, RECIPE, nodes=nodes))
    assert flags[flags.index("--rdzv_conf") + 1] == "timeout=3"  # whole seconds, never shorter


@pytest.mark.parametrize("timeout", [["runtime.collective_timeout_s=2"], ["--rendezvous-timeout", "2"]])
def test_a_node_without_node_0_says_what_it_waits_for_and_gives_up(tmp_path, capsys, timeout):
    """No node 0 listens: node 1 says where it waits, and ends after the timeout with one line
    (it waited without a word for torchrun's 600 s and more)."""
    from harness.cli import main

    port, out = free_port(), tmp_path / "run"
    code = main(["launch", "--mode", "ddp", "--nproc", "1", "--nnodes", "2", "--node-rank", "1",
                 "--main-port", str(port), "configs/digits_mlp.yaml", *TINY, *timeout, "--output", str(out)])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"harness launch: node 1 of 2 waits for node 0 at 127.0.0.1:{port} (up to 2 s)",
        f"error: node 0 never answered at 127.0.0.1:{port} within 2 s (runtime.collective_timeout_s, or "
        "--rendezvous-timeout): start it with --node-rank 0 and the same --main-port, or check --main-address"]
    assert not out.exists()


def test_node_0_alone_gives_up_after_the_timeout_naming_the_rendezvous(tmp_path, capsys):
    """Node 0 listens, no other node comes: torchrun's rendezvous ends at the bound, and the
    launch's last line says what never met (not only torchrun's traceback)."""
    from harness.cli import main

    port, out = free_port(), tmp_path / "run"
    code = main(["launch", "--mode", "ddp", "--nproc", "1", "--nnodes", "2", "--node-rank", "0",
                 "--main-port", str(port), "--rendezvous-timeout", "2", "configs/digits_mlp.yaml", *TINY,
                 "--output", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert lines[0] == f"harness launch: node 0 of 2 listens at 127.0.0.1:{port} for the other nodes (up to 2 s)"
    assert lines[-1].startswith(f"error: the 2 nodes did not all meet at 127.0.0.1:{port} within 2 s"), lines[-1]
    assert not out.exists()
