"""Which processes are still running: a stopped command must leave none of its children behind."""

from __future__ import annotations

import subprocess


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line and "ps -eo" not in line]
