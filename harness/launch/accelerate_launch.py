"""accelerate's launcher, started the way the harness command starts.

``harness launch`` runs ``python -m harness.launch.accelerate_launch ARGS``: accelerate's
own ``accelerate launch`` (``accelerate.commands.launch.main``) with the same arguments,
in a process that imports torch and accelerate with the cyclic collector paused and
leaves without the interpreter's final collection, as ``harness run`` does
(measure/startup.py, process/shutdown.py). The launcher does nothing else in between but
start the ranks and wait for them, so the collector has nothing to find there; walking
the import's heap took over a quarter of the launcher's own CPU (``import
accelerate.commands.launch, torch.distributed.run``, idle: 1.8-1.9 s of CPU with the
collector, 1.3 s without).
"""

from __future__ import annotations

import sys


def main() -> int:
    from harness.measure import startup
    from harness.process.shutdown import skip_final_collection

    skip_final_collection()
    with startup.collector_paused():
        from accelerate.commands.launch import main as accelerate_launch
    accelerate_launch()  # parses sys.argv[1:], as `accelerate launch` does
    return 0


if __name__ == "__main__":
    sys.exit(main())
