"""``harness bench-inference RUN_DIR`` on a language model's run: prefill latency and KV-cached decode.

Two figures a language model is served by. Prefill: one forward pass over a prompt
that fills a fresh KV cache, at batch 1, timed per pass at a few prompt lengths (an
eighth, half and all of the model's positions). Decode: one new token per sequence
per step against the cache (``model(token, cache)``, as ``generate`` does), greedy,
at each of ``inference.batch_sizes`` (1 and larger): each step is timed, and tokens/s
is new tokens over the timed steps' time. A round starts from a prompt of an eighth
of the positions (its prefill untimed) and decodes until the positions run out;
rounds repeat until ``inference.batches`` steps are timed, after
``inference.warmup_batches`` untimed ones. The model is prepared by the run's
Accelerator: its device, precision (autocast) and compile setting. On a GPU each pass
is synchronised before its clock stops, so a latency is the pass's whole time.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.errors import BadInput
from harness.infer.reload import RunFolder, build_trained_model
from harness.report.columns import aligned
from harness.report.lm_inference import KIND


def prompt_lengths(positions: int) -> list[int]:
    return sorted({max(1, positions // 8), max(1, positions // 2), positions})


def _clock(device):
    import torch

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    return now


def prefill_ms(model, own, x, warmup: int, passes: int, now) -> list[float]:
    """Latencies (ms) of ``passes`` prefills of ``x`` into a fresh cache, after ``warmup``."""
    lat = []
    for i in range(warmup + passes):
        cache = own.new_cache(x.shape[0], x.shape[1])
        t0 = now()
        model(x, cache)
        t1 = now()
        if i >= warmup:
            lat.append((t1 - t0) * 1000.0)
    return lat


def decode_ms(model, own, prompt, positions: int, warmup: int, steps: int, now) -> list[float]:
    """Latencies (ms) of ``steps`` cached decode steps of a batch, after ``warmup`` untimed ones."""
    lat: list[float] = []
    done = 0
    while len(lat) < steps:
        cache = own.new_cache(prompt.shape[0], positions)
        logits = model(prompt, cache)[:, -1]
        for _ in range(positions - prompt.shape[1]):
            nxt = logits.argmax(dim=-1, keepdim=True)
            t0 = now()
            logits = model(nxt, cache)[:, -1]
            t1 = now()
            done += 1
            if done > warmup:
                lat.append((t1 - t0) * 1000.0)
                if len(lat) == steps:
                    break
    return lat


def measure_text(run: RunFolder) -> dict:
    """The body of inference.yaml for a language model's run."""
    import torch

    from harness.config.run import to_dict
    from harness.measure import contention, environment
    from harness.measure.stats import distribution
    from harness.run import accel

    cfg, inf = run.cfg, run.cfg.inference
    accelerator, precision = accel.build_accelerator(cfg.runtime)
    own = build_trained_model(run)
    if not callable(getattr(own, "new_cache", None)):
        raise BadInput(f"model.name: {cfg.model.name} has no new_cache(batch, max_len), the KV cache "
                       "bench-inference decodes with (harness/models/gpt.py has one)")
    positions = own.config.seq_len
    model = accelerator.prepare(own)
    model.eval()
    own = accelerator.unwrap_model(model)
    device, now = accelerator.device, _clock(accelerator.device)
    vocab = own.config.vocab_size
    gen = torch.Generator().manual_seed(cfg.seed)
    tokens = torch.randint(0, vocab, (max(inf.batch_sizes), positions), generator=gen).to(device)
    prefill, decode = [], []
    # What other processes took of the CPUs while each row was measured (its warm-up passes
    # included): the rows' figures carry it, and the table names a contended row's share.
    probe = contention.Probe()
    with torch.inference_mode():
        for length in prompt_lengths(positions):
            with contention.Window(probe) as window:
                lat = prefill_ms(model, own, tokens[:1, :length], inf.warmup_batches, inf.batches, now)
            prefill.append({"prompt_tokens": length, "latency_ms": distribution(lat),
                            "tokens_per_s": length * len(lat) / (sum(lat) / 1000.0), "contention": window.block()})
        prompt_len = max(1, positions // 8)
        if prompt_len >= positions:
            raise BadInput(f"model: {positions} positions leave no room to decode after a prompt")
        for bs in inf.batch_sizes:
            with contention.Window(probe) as window:
                lat = decode_ms(model, own, tokens[:bs, :prompt_len], positions, inf.warmup_batches,
                                inf.batches, now)
            decode.append({"batch_size": bs, "step_latency_ms": distribution(lat),
                           "tokens_per_s": bs * len(lat) / (sum(lat) / 1000.0), "contention": window.block()})
    return {"kind": KIND, "run": str(run.path), "model": str(run.weights),
            "positions": positions, "vocab_size": vocab, "precision": precision.name,
            "compiled": cfg.runtime.compile.enabled, "warmup_passes": inf.warmup_batches,
            "timed_passes": inf.batches, "decode_prompt_tokens": prompt_len,
            "prefill": prefill, "decode": decode,
            "contention": contention.worst([r["contention"] for r in prefill + decode]),
            "mode": accel.describe(accelerator),
            "environment": environment.collect(cfg.seed), "config": to_dict(cfg)}


def table(body: dict) -> str:
    rows = [["prefill tokens", "p50 ms", "p90 ms", "tokens/s"]]
    rows += [[r["prompt_tokens"], f"{r['latency_ms']['p50']:.3f}", f"{r['latency_ms']['p90']:.3f}",
              f"{r['tokens_per_s']:,.1f}"] for r in body["prefill"]]
    rows += [["decode batch", "p50 ms/step", "p90 ms/step", "tokens/s"]]
    rows += [[r["batch_size"], f"{r['step_latency_ms']['p50']:.3f}", f"{r['step_latency_ms']['p90']:.3f}",
              f"{r['tokens_per_s']:,.1f}"] for r in body["decode"]]
    head = (f"inference  {body['mode'].get('device', '')}, precision {body['precision']}, "
            f"compiled {body['compiled']}, {body['positions']} positions, KV cache")
    return "\n".join([head, *aligned(rows, right={0, 1, 2, 3}), *_conditions(body)])


def _conditions(body: dict) -> list[str]:
    """Under the figures, as under `harness run`'s: whether the machine was quiet while they
    were taken (the most contended row), and what to do when it was not."""
    from harness.report import conditions

    found = conditions.caveats({"contention": body.get("contention")})
    if not found:
        quiet = conditions.quiet_line({"contention": body.get("contention")})
        return [f"timing conditions  {quiet}"] if quiet else []
    return [f"timing conditions  {c.advice}" for c in found]


def cmd_bench_text(run: RunFolder, output: str | None, overwrite: bool) -> int:
    from harness.files.atomic import write_text_atomic
    from harness.report.io import _plain, dump

    from harness.report.lm_inference import FOLDER, NAME

    path = Path(output or run.path / FOLDER) / NAME
    if path.exists() and not overwrite:
        raise BadInput(f"{path}: holds an earlier measurement; give --overwrite to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise BadInput(f"--output: {path.parent} is a file; expected a folder")
    body = measure_text(run)
    write_text_atomic(path, dump(_plain(body)))
    print(table(body))
    print(f"wrote {path}")
    return 0
