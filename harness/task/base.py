"""What the loop, the meter and evaluation need from a kind of workload.

The loop stays ``zero_grad -> forward -> loss -> backward -> step``; a ``Task``
supplies the parts that differ between workloads:

- ``batch``: the loader's batch as (inputs, targets) on the device;
- ``loss``: the training loss of one batch (a mean over its units);
- ``units``: how many units of throughput a batch holds (samples or tokens),
  computed from shapes on the host so counting never synchronises the device;
- ``eval_stats`` and ``metrics``: evaluation as per-sample sums that
  ``accelerator.gather_for_metrics`` can gather (it drops the samples a distributed
  sampler repeated), then the figures those sums give.

``Evaluation`` accumulates ``eval_stats`` over a pass on the device, as the loop's
``evaluate`` does today, so a task's figures come out of one ``.item()`` per sum.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Task(Protocol):
    name: str
    """The config's ``task:`` value (``classification``, ``causal_lm``)."""
    unit: str
    """What one unit of throughput counts: ``samples`` or ``tokens``."""

    def batch(self, batch, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), moved to ``device`` when given and not there already."""
        ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The scalar training loss: a mean over the batch's units."""
        ...

    def units(self, targets: torch.Tensor, samples: int | None = None) -> int:
        """Units in the first ``samples`` samples of the batch (all when None).

        The meter passes the count of real samples, so a distributed sampler's
        padding never counts as throughput.
        """
        ...

    def eval_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample figures (first dimension: the batch) whose sums ``metrics`` reads."""
        ...

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """The evaluation figures from the sums of ``eval_stats`` over a whole pass."""
        ...


def move(batch, device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a loader batch on ``device``; a prepared loader has moved them already."""
    inputs, targets = batch
    if device is not None:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    return inputs, targets


class Evaluation:
    """Sums of a task's ``eval_stats`` over a pass, kept on the device until ``result``.

    ``gather``, when given, is ``accelerator.gather_for_metrics``: it runs on each
    batch's per-sample figures before they are summed.
    """

    def __init__(self, task: Task, device: torch.device | None = None, gather=None):
        self.task, self.device, self.gather = task, device, gather
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Adds one batch; returns its (gathered) per-sample figures."""
        stats = self.task.eval_stats(outputs, targets)
        if self.gather is not None:
            stats = self.gather(stats)
        for key, value in stats.items():
            if key not in self.sums:
                # float32 losses and int64 counts, as the loop's own accumulators
                self.sums[key] = torch.zeros((), device=value.device if self.device is None else self.device,
                                             dtype=torch.long if not value.is_floating_point() else value.dtype)
            self.sums[key] += value.sum()
        return stats

    def result(self) -> dict[str, float]:
        return self.task.metrics({key: value.item() for key, value in self.sums.items()})
