"""The test loader of a reloaded run, built and prepared as the run built its own.

``harness evaluate`` passes a split through it to ``loop.evaluate``: same batch size,
order and mode as the run's test pass, so the figures are the run's exactly.
"""

from __future__ import annotations


def eval_loader(view, cfg, accelerator):
    """The test loader as the run built and prepared it (loaders.py, build.py)."""
    import torch

    from harness.run import accel
    from harness.data.loaders import _loader as plain_loader, epoch_seed
    from harness.data.resident import DeviceResidentLoader

    bs = cfg.loader.eval_batch_size or cfg.loader.batch_size
    if cfg.loader.kind == "device_resident":
        loader = DeviceResidentLoader(view, bs).to(accelerator.device)
    else:
        loader_cfg = accel.pin_on_gpu(cfg.loader, accelerator)
        loader = accelerator.prepare(plain_loader(view, loader_cfg, bs, False, None,
                                                  torch.Generator().manual_seed(epoch_seed(cfg.seed, 0))))
    if cfg.runtime.compile.enabled and cfg.runtime.compile.dynamic is None:
        loader = accel.DynamicBatchDim(loader)
    return loader
