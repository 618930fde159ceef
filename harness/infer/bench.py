"""The inference scenario: the model's forward pass alone, timed per batch at several batch sizes.

``harness run`` with ``scenario: inference``, or ``harness bench-inference
CONFIG_OR_RUN_DIR``. The model (random seeded weights, or ``inference.weights``)
is prepared in the run mode (device, precision's autocast, torch.compile), put in
``eval()`` and called under ``torch.inference_mode()`` on a batch of the data set's
own samples (eval transforms, the weights preset included: preprocess.recipe_data;
already on the device: the loader is not timed).
For each batch size, ``inference.warmup_batches`` passes run first (compilation,
caches) and are never counted; then each of ``inference.batches`` passes is timed
on its own: by CUDA events on a GPU (no host sync inside the loop), by
``perf_counter`` on the CPU, where the call returns once the work is done. The
samples/s figure is its own clock: the wall time of the timed passes together
(synchronised once at the end), so per-pass overheads the latencies miss show up
as a gap between the two. Host memory (PSS of the process tree, RSS) and the device
peak are kept per phase: setup, then one phase per batch size.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from harness.errors import BadInput
from harness.report.columns import aligned


def time_batches(model, x, warmup: int, batches: int, device, window=None) -> tuple[list[float], float]:
    """Per-pass latencies (ms) of ``batches`` timed passes after ``warmup`` untimed ones,
    and the wall seconds of the timed passes together. ``window`` (measure/contention.py)
    is opened and closed around the timed passes alone."""
    import torch

    if window is None:
        from harness.measure.contention import Window

        window = Window()
    cuda = device.type == "cuda"
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        if cuda:
            torch.cuda.synchronize(device)
        with window:
            return _timed(model, x, batches, device, cuda)


def _timed(model, x, batches: int, device, cuda: bool) -> tuple[list[float], float]:
    """The timed passes (inside inference_mode): latencies (ms) and their wall seconds."""
    import torch

    if cuda:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(batches)]
        t0 = time.perf_counter()
        for start, end in events:
            start.record()
            model(x)
            end.record()
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
        return [s.elapsed_time(e) for s, e in events], wall
    lat = []
    t0 = time.perf_counter()
    for _ in range(batches):
        a = time.perf_counter()
        model(x)
        lat.append((time.perf_counter() - a) * 1000.0)
    return lat, time.perf_counter() - t0


def sample_batch(data, size: int, device):
    """``size`` samples of the test split (the whole pool's order when it is empty), repeated
    as needed, through the eval transforms."""
    import torch

    from harness.data.split import TransformedSubset

    indices = data.test.indices or data.dev.indices or data.train.indices
    view = TransformedSubset(data.test.base, indices, data.test.transform)
    return torch.stack([view[i % len(view)][0] for i in range(size)]).to(device)


def _peaks(phases: dict) -> dict:
    keys = ("peak_rss_mb", "peak_pss_mb", "peak_uss_mb", "device_peak_allocated_mb", "device_peak_reserved_mb")
    out = {}
    for k in keys:
        values = [p[k] for p in phases.values() if p.get(k) is not None]
        out[k] = max(values) if values else None
    return out


def execute(cfg, output: Path, overwrite: bool = False) -> tuple[dict, int]:
    """Measure ``cfg`` into ``output``/report.yaml; returns (report, exit status). BadInput propagates.

    A folder holding another run (a training run's, or an earlier measurement) is bad
    input unless ``overwrite`` (run_folder.py). Whatever propagates out (bad input, a
    signal's exception, Ctrl-C) leaves nothing half-written: the ``config.yaml`` written
    and a folder the lock created are removed (``RunFolder(discard_on_error=True)``) and
    the memory sampler is stopped. A failure the measurement records is a report, not this.
    """
    from accelerate.utils import set_seed

    from harness.config.run import to_dict
    from harness.data.preprocess import recipe_data
    from harness.files import run_folder
    from harness.files.run_folder import RunFolder
    from harness.infer.reload import load_weights
    from harness.measure import contention, threads
    from harness.measure.memory import MemorySampler
    from harness.measure.stats import distribution
    from harness.models.registry import build_model
    from harness.run import accel
    from harness.run.report_builder import ReportBuilder, contention_warnings, data_block

    t_start = time.perf_counter()
    if cfg.measure.repeats > 1:
        raise BadInput("measure.repeats: scenario: inference measures each batch size once "
                       "(inference.batches timed passes); set measure.repeats: 1")
    run_folder.check_unused(output, overwrite, resumable=False)
    accelerator, precision = accel.build_accelerator(cfg.runtime)
    device = accelerator.device
    cuda = device.type == "cuda"
    if accelerator.num_processes > 1:
        raise BadInput("scenario: inference measures one process; run it without a distributed launch")
    sampler = MemorySampler(cfg.measure.rss_interval_ms / 1000.0, cuda_device=device if cuda else None)
    sampler.enter("setup")
    try:
        set_seed(cfg.seed)
        data = recipe_data(cfg)
        set_seed(cfg.seed)
        model, info = build_model(cfg.model, data.sample_shape, data.num_classes)
        if cfg.inference.weights:
            load_weights(model, cfg.inference.weights)
        with RunFolder(output, discard_on_error=True) as folder:
            folder.claim(overwrite, resumable=False)
            builder = ReportBuilder.start(cfg)
            model = accelerator.prepare(model)
            model.eval()
            builder.setup(data_block(data, sizes=False), info,
                          {**accel.describe(accelerator), "precision": precision.name})
            folder.write_config(to_dict(cfg))
            inputs = sample_batch(data, max(cfg.inference.batch_sizes), device)
            setup_s = time.perf_counter() - t_start
            sampler.leave()
            rows, status, code = [], "completed", 0
            probe = contention.Probe()
            threads.warn_at_start(threads.threads_block(probe.capacity, 1))
            try:
                for bs in cfg.inference.batch_sizes:
                    window = contention.Window(probe)
                    with sampler.phase(f"batch_{bs}"):
                        lat, wall = time_batches(model, inputs[:bs], cfg.inference.warmup_batches,
                                                 cfg.inference.batches, device, window)
                    rows.append({"batch_size": bs, "latency_ms": distribution(lat),
                                 "samples_per_s": bs * len(lat) / wall, "timed_wall_s": wall,
                                 "memory": sampler.summary()[f"batch_{bs}"], "contention": window.block(),
                                 "raw_latency_ms": lat})
            except Exception as err:  # noqa: BLE001 -- e.g. out of memory at the largest batch: recorded
                status, code = "failed", 1
                builder.failed(f"{err.__class__.__name__}: {err}", traceback.format_exc(limit=8))
            finally:
                sampler.stop()
            phases = sampler.summary()
            block = _contention(rows, device)
            threads_block = threads.threads_block(probe.capacity, 1, (block or {}).get("foreign_cpu_fraction"))
            inference = {"weights": str(cfg.inference.weights) if cfg.inference.weights else "random",
                         "clock": "cuda_events" if cuda else "perf_counter", "precision": precision.name,
                         "compiled": cfg.runtime.compile.enabled, "warmup_batches": cfg.inference.warmup_batches,
                         "timed_batches": cfg.inference.batches, "batch_sizes": rows}
            throughput, step_time_ms, raw = _headline(rows, cfg.inference.warmup_batches)
            builder.inferred(inference, {**_peaks(phases), "setup": phases.get("setup")}, block, threads_block,
                             throughput, step_time_ms, raw)
            builder.finished(status, {"setup_s": setup_s, "total_wall_s": time.perf_counter() - t_start,
                                      "process_wall_s": time.perf_counter() - t_start})
            builder.warn([f"latency at batch {r['batch_size']} is {r['latency_ms']['noise']}: IQR/median = "
                          f"{r['latency_ms']['iqr_over_median']:.2f}" for r in rows
                          if r["latency_ms"]["noise"] != "ok"] + contention_warnings(block, threads_block))
            folder.write_report(builder.report)
    except BaseException:
        sampler.stop()
        raise
    return builder.report, code


def _contention(rows: list[dict], device) -> dict | None:
    """The report's block: the worst batch size's (each row keeps its own); on a GPU, with
    the other processes that held the device, where pynvml can say."""
    from harness.measure import contention

    block = contention.worst([r["contention"] for r in rows])
    if block is not None and device.type == "cuda":
        block = {**block, "device_processes": contention.device_holders(device.index or 0, contention.own_pids())}
    return block


def _headline(rows: list[dict], warmup_batches: int) -> tuple[dict, dict | None, dict | None]:
    """The figures compare reads: (throughput, step_time_ms, raw): samples/s at the largest
    batch size, latency at the smallest; the rows' raw latencies move to ``raw``."""
    if not rows:
        return {}, None, None
    small = min(rows, key=lambda r: r["batch_size"])
    large = max(rows, key=lambda r: r["batch_size"])
    throughput = {"samples_per_s": large["samples_per_s"], "global_batch_size": large["batch_size"],
                  "measured_steps": large["latency_ms"]["count"], "warmup_steps": warmup_batches,
                  "window_s": large["timed_wall_s"]}
    raw = {"step_time_ms": small["raw_latency_ms"]}
    for r in rows:
        r.pop("raw_latency_ms")
    return throughput, small["latency_ms"], raw


def summary_table(report: dict, path: Path) -> str:
    inf = report.get("inference") or {}
    rows = [["batch", "p50 ms", "p90 ms", "p99 ms", "samples/s", "peak PSS MB"]]
    for r in inf.get("batch_sizes", []):
        lat, pss = r["latency_ms"], (r["memory"] or {}).get("peak_pss_mb")
        rows.append([r["batch_size"], f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}",
                     f"{r['samples_per_s']:,.1f}", "-" if pss is None else f"{pss:,.1f}"])
    return "\n".join([f"inference  {report['distributed']['device']}, precision {inf.get('precision')}, "
                      f"compiled {inf.get('compiled')}, weights {inf.get('weights')}, clock {inf.get('clock')}",
                      *aligned(rows, right=set(range(6))), f"report  {path}"])


def run_and_print(cfg, output: Path, overwrite: bool = False) -> int:
    report, code = execute(cfg, output, overwrite)
    print(summary_table(report, output / "report.yaml"))
    if report.get("error"):
        print(f"error: {report['error']}", file=sys.stderr)
    return code


def cmd_bench_inference(args) -> int:
    """CONFIG: random weights, into <output.dir>/inference. RUN_DIR: its config and model.pt,
    into RUN_DIR/inference. --output DIR: into DIR."""
    from harness.args import split_positionals
    from harness.config.run import load_config

    source, overrides = split_positionals(args.items)
    if source is None:
        raise BadInput("bench-inference: needs a CONFIG file or a RUN_DIR")
    overrides = ["scenario=inference"] + overrides
    if Path(source).is_dir():
        from harness.infer.reload import open_run

        run = open_run(source)
        if run.text:
            from harness.infer.text_bench import cmd_bench_text

            return cmd_bench_text(open_run(source, overrides), args.output, args.overwrite)
        cfg = load_config(run.path / "config.yaml", overrides)
        cfg.inference.weights = str(run.weights)
        output = Path(args.output) if args.output else run.path / "inference"
    else:
        cfg = load_config(source, overrides)
        # Beside the recipe's training run, if any, never over it.
        output = Path(args.output) if args.output else Path(cfg.output.dir) / "inference"
    cfg.output.dir = str(output)
    return run_and_print(cfg, output, args.overwrite)
