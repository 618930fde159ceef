"""One optimizer step of a tiny model through the harness's DDP path, per rank.

Started by tests/test_distributed.py under ``accelerate launch --config_file
launch/cpu-ddp.yaml``: each process builds the harness's Accelerator, lets it wrap
the model (DDP over gloo) and shard the one global batch, runs the harness's train
step once, and saves what it ended with to ``OUT/rank<R>.pt``. The test compares
that with a single-process step on the whole batch.

Usage: python tests/ddp_parity_worker.py OUT
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

GLOBAL_BATCH = 8
LR = 0.5


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(GLOBAL_BATCH, 6, generator=g), torch.randint(0, 3, (GLOBAL_BATCH,), generator=g)


def main(out: str) -> None:
    from harness.run.accel import RuntimeConfig, build_accelerator
    from harness.run.guard import StepGuard, StopSignals
    from harness.run.loop import TrainParts, train_epoch
    from harness.measure.config import MeasureConfig
    from harness.measure.meter import NullMeter

    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    world = acc.num_processes
    x, y = global_batch()
    # batch_size is per process, as loader.batch_size is: the global batch is split in two.
    loader = DataLoader(TensorDataset(x, y), batch_size=GLOBAL_BATCH // world, shuffle=False)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    seen = []

    def recording(batches):
        for batch in batches:
            seen.append(batch[0].clone())
            yield batch

    parts = TrainParts(acc, model, optimizer, None, nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="none"))
    result = train_epoch(parts, recording(loader), NullMeter(MeasureConfig(warmup_steps=0), acc.device),
                         StepGuard(acc, StopSignals()))
    state = {k: v.detach().clone() for k, v in acc.unwrap_model(model).state_dict().items()}
    torch.save({"state": state, "inputs": torch.cat(seen), "steps": result.steps, "world_size": world,
                "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
                "wrapped": type(model).__name__, "pid": os.getpid()},
               os.path.join(out, f"rank{acc.process_index}.pt"))
    # Leave together: a rank tearing down its process group while the other is still
    # finishing the last collective aborts in gloo ("terminate called without an active
    # exception", seen once in CI).
    acc.wait_for_everyone()
    acc.end_training()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
