"""Models imported by path in tests (model.name: custom_models:ClassName)."""

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)


class WrongWidth(nn.Module):
    """fc2 expects 100 inputs but fc1 gives 32: the classic mismatch."""

    def __init__(self, in_channels: int, image_size, num_classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_channels * image_size[0] * image_size[1], 32)
        self.fc2 = nn.Linear(100, num_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.flatten(x))))


class WrongClasses(nn.Module):
    def __init__(self, in_channels: int, image_size):
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size[0] * image_size[1], 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


class NotAModule:
    pass


class _Counting(TinyNet):
    """TinyNet that counts its training forwards (probe, FLOP count and eval passes excluded)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__(in_channels, num_classes, width)
        self.train_forwards = 0

    def counted(self) -> int:
        if self.training and torch.is_grad_enabled():
            self.train_forwards += 1
        return self.train_forwards


class NanAfter(_Counting):
    """The loss becomes NaN from training step ``step`` on (1-based)."""

    def __init__(self, in_channels: int, num_classes: int, step: int = 5):
        super().__init__(in_channels, num_classes)
        self.bad_from = step

    def forward(self, x):
        out = super().forward(x)
        if self.counted() >= self.bad_from:
            out = out * float("nan")
        return out


class SignalAt(_Counting):
    """Sends ``signum`` to its own process at training step ``step`` of the first run only.

    The marker file makes the resumed run (same config) train on without a signal.
    """

    def __init__(self, in_channels: int, num_classes: int, step: int, signum: int, marker: str):
        super().__init__(in_channels, num_classes)
        self.at, self.signum, self.marker = step, signum, marker

    def forward(self, x):
        import os
        from pathlib import Path

        out = super().forward(x)
        if self.counted() == self.at and not Path(self.marker).exists():
            Path(self.marker).write_text("sent\n")
            os.kill(os.getpid(), self.signum)
        return out


class Slow(TinyNet):
    """TinyNet whose training forward sleeps, so a test can kill it mid-run."""

    def __init__(self, in_channels: int, num_classes: int, sleep_ms: float = 50.0):
        super().__init__(in_channels, num_classes)
        self.sleep_s = sleep_ms / 1000.0

    def forward(self, x):
        import time

        if self.training:
            time.sleep(self.sleep_s)
        return super().forward(x)


class SlowToSave(_Counting):
    """TinyNet whose training forward sleeps ``sleep_ms`` and whose checkpoint takes ``save_s``
    more; ``marker`` is written at its third training step, once the run's handlers are in."""

    def __init__(self, in_channels: int, num_classes: int, marker: str, sleep_ms: float = 20.0,
                 save_s: float = 0.0):
        super().__init__(in_channels, num_classes)
        self.marker, self.sleep_s, self.save_s = marker, sleep_ms / 1000.0, save_s

    def forward(self, x):
        import time
        from pathlib import Path

        if self.counted() == 3:
            Path(self.marker).write_text("training\n")
        if self.training:
            time.sleep(self.sleep_s)
        return super().forward(x)

    def state_dict(self, *args, **kwargs):
        import time

        time.sleep(self.save_s)
        return super().state_dict(*args, **kwargs)


class _OnRankAtStep(TinyNet):
    """TinyNet that misbehaves at training step ``step`` on rank ``rank`` of a distributed run."""

    def __init__(self, in_channels: int, num_classes: int, rank: int = 1, step: int = 3):
        super().__init__(in_channels, num_classes)
        self.rank, self.at, self.forwards = rank, step, 0

    def misbehave(self) -> None:
        raise NotImplementedError

    def forward(self, x):
        import os

        if self.training and torch.is_grad_enabled():
            self.forwards += 1
            if self.forwards == self.at and int(os.environ.get("RANK", "0")) == self.rank:
                self.misbehave()
        return super().forward(x)


class FailOnRank(_OnRankAtStep):
    def misbehave(self) -> None:
        raise RuntimeError(f"boom on rank {self.rank} at step {self.at}")


class HangOnRank(_OnRankAtStep):
    """Stops answering (sleeps for an hour) without dying."""

    def misbehave(self) -> None:
        import time

        time.sleep(3600)


class SlowByEnv(TinyNet):
    """TinyNet whose training step sleeps ``$HARNESS_TEST_STEP_SLEEP_MS``.

    The config is the same whatever the sleep, so two runs are the same recipe (same
    config_hash) and differ only in speed: a commit that made every step slower.
    """

    def forward(self, x):
        import os
        import time

        if self.training:
            time.sleep(float(os.environ.get("HARNESS_TEST_STEP_SLEEP_MS", "0")) / 1000.0)
        return super().forward(x)


class ExitOnRank(_OnRankAtStep):
    """Dies without a note: no exception, no exit hook (as the OOM killer or os._exit)."""

    def misbehave(self) -> None:
        import os

        os._exit(7)


class SegfaultOnRank(_OnRankAtStep):
    def misbehave(self) -> None:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
