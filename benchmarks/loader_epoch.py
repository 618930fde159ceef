"""Time one epoch of the default recipe's train loader on each path (best of 7 passes).

Run from the repository root: ``python benchmarks/loader_epoch.py``. Loading only, no
training: decode, augmentation and collation on the DataLoader path (workers 0); indexing
and augmentation on the device-resident path. The best of 7 is robust to a busy machine.
"""

from __future__ import annotations

import time

from harness.config.run import load_config
from harness.data import build_data
from harness.data.loaders import build_loaders


def main() -> None:
    cfg = load_config("configs/digits_cnn.yaml", [])
    data = build_data(cfg.data, cfg.seed)
    for kind in ("dataloader", "device_resident"):
        cfg.loader.kind = kind
        loaders = build_loaders(data.train, data.dev, data.test, cfg.loader, cfg.seed)
        best, n = float("inf"), 0
        for epoch in range(7):
            loaders.reseed(cfg.seed, epoch)
            t0 = time.perf_counter()
            n = sum(1 for _ in loaders.train)
            best = min(best, time.perf_counter() - t0)
        print(f"{kind}: best of 7 epochs {best * 1000:.1f} ms for {n} batches = {best / n * 1000:.2f} ms a batch")


if __name__ == "__main__":
    main()
