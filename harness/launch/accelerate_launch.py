"""accelerate's launcher, started the way the harness command starts, after the preflight.

``harness launch`` runs ``python -m harness.launch.accelerate_launch ARGS``: accelerate's
own ``accelerate launch`` (``accelerate.commands.launch.main``) with the same arguments,
in a process that imports torch and accelerate with the cyclic collector paused and
leaves without the interpreter's final collection, as ``harness run`` does
(measure/startup.py, process/shutdown.py). The launcher does nothing else in between but
start the ranks and wait for them, so the collector has nothing to find there; walking
the import's heap took over a quarter of the launcher's own CPU (``import
accelerate.commands.launch, torch.distributed.run``, idle: 1.8-1.9 s of CPU with the
collector, 1.3 s without).

On one node, ``harness launch`` hands its preflight (command.py, ``check_run``: the config,
the output folder, the data and the model's build) to this process through
``command.PREFLIGHT_ENV``, so torch is imported once per launch, here, and not also in
``harness launch``. A refusal is the preflight's one line on stderr and exit 2, before
any rank starts; a preflight that passes writes the run's output folder to the file the
spec names, for ``harness launch`` to blame silent ranks in.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def main() -> int:
    from harness.launch.command import PREFLIGHT_ENV
    from harness.measure import startup
    from harness.process.shutdown import skip_final_collection

    skip_final_collection()
    spec = os.environ.pop(PREFLIGHT_ENV, None)  # out before the ranks start: they never see it
    if spec is not None:
        # A SIGINT or SIGTERM (forwarded by `harness launch`) ends the preflight as the signal
        # says, without a traceback: `harness launch` then prints its one line.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        code = preflight(json.loads(spec))
        if code:
            return code
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with startup.collector_paused():
        from accelerate.commands.launch import main as accelerate_launch
    accelerate_launch()  # parses sys.argv[1:], as `accelerate launch` does
    return 0


def preflight(spec: dict) -> int:
    """``check_run`` of the run every rank will start; 2 and its one line when it refuses."""
    from harness.errors import EXIT_BAD_INPUT, BadInput, error_line
    from harness.launch.command import check_run

    try:
        output, _ = check_run(spec["run_args"], check_folder=True, world=spec["world"])
    except BadInput as err:
        print(error_line(err), file=sys.stderr)  # one line, as `harness` prints
        return EXIT_BAD_INPUT
    with open(spec["report"], "w") as f:
        json.dump({"output": str(output)}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
