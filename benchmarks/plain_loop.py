"""The default recipe as a hand-written PyTorch loop: the yardstick for the harness's overhead.

Everything a user would write without the harness, and nothing more: torchvision's
ImageFolder over the same digits PNGs, the same transforms, split, batch size,
model, optimizer and schedule, and ``zero_grad -> forward -> loss -> backward ->
step`` for the epochs, with dev accuracy under ``model.eval()`` and
``torch.inference_mode()`` after each, as the recipe does. No Accelerate, no meter,
no guard, no checkpoints. Its clock reads what the harness's window reads: from the
end of warm-up to the last step, data loading included, evaluation excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms as T
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder

from benchmarks.hand_clock import StepClock
from harness.models.registry import CNN


@dataclass
class PlainResult:
    samples_per_s: float
    measured_steps: int
    measured_samples: int
    window_s: float
    wait_ms: list[float]
    """Each measured step's wait for its batch."""
    step_ms: list[float]
    """Each measured step, from the batch in hand to the scheduler's step."""
    dev_accuracy: float


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for inputs, targets in loader:
            correct += (model(inputs).argmax(dim=1) == targets).sum().item()
            total += targets.shape[0]
    return correct / total


def plain_loop(root: str, epochs: int = 3, batch_size: int = 64, warmup_steps: int = 10,
               seed: int = 0, lr: float = 0.002) -> PlainResult:
    torch.manual_seed(seed)
    train_tf = T.Compose([T.Grayscale(1), T.RandomRotation(10), T.ToTensor(), T.Normalize([0.3], [0.4])])
    eval_tf = T.Compose([T.Grayscale(1), T.ToTensor(), T.Normalize([0.3], [0.4])])
    pool = ImageFolder(root, transform=train_tf)
    perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
    n_dev = round(0.15 * len(pool))
    n_train = len(pool) - 2 * n_dev
    train = Subset(pool, perm[:n_train])
    dev = Subset(ImageFolder(root, transform=eval_tf), perm[n_train:n_train + n_dev])
    loader = DataLoader(train, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    dev_loader = DataLoader(dev, batch_size=batch_size)

    model = CNN(in_channels=1, image_size=(8, 8), num_classes=len(pool.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()

    clock = StepClock(warmup_steps)
    dev_accuracy = float("nan")
    for _ in range(epochs):
        model.train()
        it = iter(loader)
        clock.open()
        while True:
            clock.fetching()
            try:
                inputs, targets = next(it)
            except StopIteration:
                break
            clock.fetched()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            scheduler.step()
            clock.stepped(targets.shape[0])
        clock.close()
        dev_accuracy = evaluate(model, dev_loader)
    return PlainResult(clock.per_s, clock.measured_steps, clock.counted, clock.window_s, clock.wait_ms,
                       clock.step_ms, dev_accuracy)
