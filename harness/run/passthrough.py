"""The loop's per-step calls into Accelerate, straight to torch where a wrapper would only pass them on.

On a near-zero model a step is a few hundred microseconds of host work, and Accelerate's
wrappers were a large share of it (issue 29; benchmarks/test_step_cost.py measures it):
``AcceleratedOptimizer.zero_grad`` reads the optimizer's signature with ``inspect`` every
step, ``step`` asks which distributed type runs and whether lomo_optim is installed,
``Accelerator.backward`` divides the loss by ``gradient_accumulation_steps`` (a device op,
even a division by 1), ``AcceleratedScheduler.step`` builds ``AcceleratorState()`` to read
the process count, and ``optimizer_step_was_skipped`` walks the optimizers.

When nothing needs their logic -- no gradient scaler, one micro-batch per optimizer step,
not XLA, DeepSpeed or Megatron-LM, no LOMO optimizer -- ``StepCalls`` does exactly what the
wrappers would have done in that case (accelerate 1.16), the conditions they test read
once per loop instead of once per step. Otherwise it calls the wrappers. The objects
prepared by Accelerate stay the ones the run holds (checkpoints, the recorder's learning
rate, the scaler's state): only the loop's calls go around them.
"""

from __future__ import annotations

import inspect


def _direct(accelerator, optimizer, grad_accum_steps: int) -> bool:
    """Whether the wrappers' per-step logic reduces to calling torch in this run."""
    from accelerate.optimizer import AcceleratedOptimizer
    from accelerate.utils import DistributedType

    if grad_accum_steps != 1 or not isinstance(optimizer, AcceleratedOptimizer):
        return False
    if getattr(accelerator, "scaler", None) is not None or optimizer.scaler is not None:
        return False
    if getattr(accelerator, "gradient_accumulation_steps", 1) != 1:
        return False
    if getattr(accelerator, "has_lomo_optimizer", False):
        return False
    if accelerator.distributed_type in (DistributedType.XLA, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        return False
    # The wrapper passes set_to_none only to an optimizer that takes it.
    return "set_to_none" in inspect.signature(optimizer.optimizer.zero_grad).parameters


class StepCalls:
    """``zero_grad``, ``backward`` and ``update`` (the optimizer's step, then the scheduler's) of one loop."""

    def __init__(self, accelerator, optimizer, scheduler, grad_accum_steps: int = 1):
        self.direct = _direct(accelerator, optimizer, grad_accum_steps)
        self._acc, self._opt, self._scheduler = accelerator, optimizer, scheduler
        self._sched = None
        """The torch scheduler when ``update`` steps it as the wrapper would; None: ``_scheduler_step`` does."""
        self._scheduler_step = scheduler.step if scheduler is not None else (lambda: None)
        if not self.direct:
            self.zero_grad = lambda: optimizer.zero_grad(set_to_none=True)
            self.backward = accelerator.backward
            return
        import torch

        # The wrapper's loss / 1 is this loss, one device op later; bound here, no call of ours between.
        self.backward = torch.Tensor.backward
        self._inner = optimizer.optimizer
        self._gradients = optimizer.gradient_state
        # The wrapper zeroes only while sync_gradients is set, and only accumulate() changes that
        # flag, which a loop of one micro-batch a step never enters: read once, torch's own call is
        # bound (the wrapper's set_to_none=True being torch's default), no call of ours a step.
        zero_grad = self._inner.zero_grad
        if not self._gradients.sync_gradients:
            self.zero_grad = lambda: None
        elif inspect.signature(zero_grad).parameters["set_to_none"].default is True:
            self.zero_grad = zero_grad
        else:
            self.zero_grad = lambda: zero_grad(set_to_none=True)
        self._processes = accelerator.num_processes
        from accelerate.scheduler import AcceleratedScheduler

        if isinstance(scheduler, AcceleratedScheduler) and scheduler.step_with_optimizer \
                and not scheduler.split_batches and all(o is optimizer for o in scheduler.optimizers):
            self._sched = scheduler.scheduler
            self._capped = hasattr(self._sched, "total_steps")  # OneCycle: read once, not every step

    def update(self) -> bool:
        """The optimizer's step, then the scheduler's; returns whether the scaler skipped the
        optimizer's (without a scaler: never). One call a step where the loop made three."""
        if not self.direct:
            self._opt.step()
            # A host-side flag, set by the scaler's own step (which has synchronised already).
            skipped = bool(self._acc.optimizer_step_was_skipped)
            self._scheduler_step()
            return skipped
        sync = self._gradients.sync_gradients
        if sync:
            self._inner.step()
        sched = self._sched
        if sched is None:  # no scheduler (a no-op), or one whose wrapper's logic is needed
            self._scheduler_step()
        elif not sync:
            if self._gradients.adjust_scheduler:
                sched._step_count += 1
        else:
            # AcceleratedScheduler.step without a scaler (no step is ever skipped): once per
            # process, since each process's batches count toward the schedule, OneCycle capped.
            for _ in range(self._processes):
                if not self._capped or sched._step_count <= sched.total_steps:
                    sched.step()
        return False
