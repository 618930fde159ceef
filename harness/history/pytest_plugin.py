"""A pytest plugin: ``pytest --history-store DIR`` adds each pytest-benchmark benchmark to a history store.

Installed with the harness (the ``pytest11`` entry point in pyproject.toml), so a team's
own pytest-benchmark suite feeds a store with one flag; this repository's benchmarks/
load it through their conftest too. At the end of the session every benchmark that
ran without error becomes one entry (docs/history.md): workload = the benchmark's full
name, mode ``pytest-benchmark``, machine = this machine as ``harness report`` names it,
figures ``time_median_s`` and ``time_mean_s`` with the rounds' times as replicates, plus
any headline figure the benchmark put in ``extra_info`` under its entry name
(``samples_per_s``: one number, or one per round). The commit is ``--history-commit``'s
or the working directory's checkout; none is a usage error before any test runs.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from harness.errors import BadInput

MODE = "pytest-benchmark"


def pytest_addoption(parser):
    group = parser.getgroup("harness history")
    group.addoption("--history-store", metavar="DIR", default=None,
                    help="add every benchmark's figures to this harness history store at the end")
    group.addoption("--history-commit", metavar="REV", default=None,
                    help="the commit they measure (default: the working directory's git checkout)")
    group.addoption("--history-branch", metavar="NAME", default=None, help="the branch to record")


def pytest_configure(config):
    store = config.getoption("history_store", None)
    if not store:
        return
    from harness.files import git
    from harness.history.store import check_store

    if not config.pluginmanager.hasplugin("benchmark"):
        raise pytest.UsageError("--history-store: needs pytest-benchmark (pip install pytest-benchmark)")

    try:
        check_store(Path(store))
    except BadInput as err:
        raise pytest.UsageError(f"--history-store: {err}") from None
    rev = config.getoption("history_commit")
    if rev is not None:
        sha = git.resolve(rev)
        if sha is None:
            raise pytest.UsageError(f"--history-commit {rev}: unknown revision in the git checkout of {Path.cwd()}")
        found = {"commit": sha, "dirty": False, "branch": None}
    else:
        found = git.checkout()
        if found is None:
            raise pytest.UsageError(f"--history-store: {Path.cwd()} is not in a git checkout; "
                                    "give --history-commit REV")
    if config.getoption("history_branch"):
        found["branch"] = config.getoption("history_branch")
    config._harness_history = (Path(store), found)


def this_machine() -> str:
    """This machine as ``harness report`` names it (hwreport/identity.py)."""
    import os

    from harness.hwreport.identity import hardware
    from harness.measure.environment import cpu_model, gpus

    g = gpus()
    comp = {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "gpu_model": g[0]["name"] if g else None,
            "gpu_count": len(g)}
    return hardware({"environment": {"comparability": comp}})


def _numbers(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]


def benchmark_figures(stats, extra_info: dict) -> dict:
    """The entry's figures of one benchmark: its times, and the headline figures it recorded."""
    from harness.history.entry import FIGURE_META, one_figure

    rounds = _numbers(stats.data)
    out = {"time_median_s": one_figure("time_median_s", stats.median, rounds),
           "time_mean_s": one_figure("time_mean_s", stats.mean, rounds)}
    for name in FIGURE_META:
        value = extra_info.get(name)
        values = _numbers(value) if isinstance(value, list) else _numbers([value])
        if values and name not in out:
            out[name] = one_figure(name, statistics.median(values), values)
    return out


def entries(benchmarks, machine: str, found: dict) -> list[dict]:
    from harness.files.clock import now
    from harness.history.entry import content_id

    out = []
    for bench in benchmarks:
        if bench.has_error or not bench.stats or not bench.stats.data:
            continue
        extra = dict(bench.extra_info or {})
        ident = content_id({"benchmark": bench.fullname, "commit": found["commit"], "machine": machine,
                            "rounds": list(bench.stats.data), "extra_info": extra})
        out.append({"workload": bench.fullname, "workload_name": bench.name, "mode": MODE, "machine": machine,
                    "commit": found["commit"], "dirty": bool(found.get("dirty")), "branch": found.get("branch"),
                    "time": now(), "source": f"pytest-benchmark {bench.fullname}", "id": ident,
                    "figures": benchmark_figures(bench.stats, extra)})
    return out


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    setting = getattr(session.config, "_harness_history", None)
    bench_session = getattr(session.config, "_benchmarksession", None)
    if setting is None or bench_session is None:
        return
    from harness.history.store import add

    store, found = setting
    made = entries(bench_session.benchmarks, this_machine(), found)
    added = add(store, made)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = f"harness history: {sum(added)} benchmark entries added to {store} at {found['commit'][:12]}"
    if reporter is not None:
        reporter.write_line(line)
