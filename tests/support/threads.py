"""One torch thread for a while, then the thread count the process had before."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def one_torch_thread():
    """Small-tensor work stays quick beside other work on a shared 2-core machine (several
    threads on busy cores collapse); what comes after gets its threads back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
