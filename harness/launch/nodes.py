"""Where one launcher sits among the machines of a run: ``harness launch --nnodes/--node-rank``."""

from __future__ import annotations

import math
import socket
import sys
import time
from dataclasses import dataclass

from harness.errors import BadInput


@dataclass
class Nodes:
    """Where this launcher sits among the machines of one run (torchrun's --nnodes, --node_rank).

    Every node runs one launcher with the same ``nnodes``, ``main_address`` and
    ``main_port``; rank 0's node listens there (static rendezvous, no etcd or c10d store).
    """

    nnodes: int = 1
    node_rank: int = 0
    main_address: str = "127.0.0.1"
    """The address of the node with node_rank 0, as every node can reach it."""
    main_port: int | None = None
    """None: a free port here, which only one machine can use; several nodes must agree on one."""
    rendezvous_timeout_s: float | None = None
    """How long the nodes wait for one another (node 0 for the others, the others for node 0);
    None: torchrun's own default. ``harness launch`` sets runtime.collective_timeout_s."""

    def check(self) -> None:
        if self.nnodes < 1:
            raise BadInput(f"--nnodes: expected an integer >= 1, got {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise BadInput(f"--node-rank: expected 0 <= rank < --nnodes ({self.nnodes}), got {self.node_rank}")
        if self.main_port is not None and not 1 <= self.main_port <= 65535:
            raise BadInput(f"--main-port: expected a port in 1..65535, got {self.main_port}")
        if self.nnodes > 1 and self.main_port is None:
            raise BadInput(f"--main-port: required with --nnodes {self.nnodes}: every node must name "
                           "the port rank 0's node listens on")
        if not self.main_address.strip():
            raise BadInput("--main-address: expected the address of node rank 0, got an empty string")
        if self.rendezvous_timeout_s is not None and not 0 < self.rendezvous_timeout_s < math.inf:
            raise BadInput(f"--rendezvous-timeout: expected seconds > 0, got {self.rendezvous_timeout_s}")

    @property
    def endpoint(self) -> str:
        return f"{self.main_address}:{self.main_port}"

    def launcher_flags(self) -> list[str]:
        """torchrun's static rendezvous bounded by ``rendezvous_timeout_s`` (whole seconds, at least 1)."""
        if self.rendezvous_timeout_s is None:
            return []
        return ["--rdzv_conf", f"timeout={max(1, math.ceil(self.rendezvous_timeout_s))}"]


TIMEOUT_SOURCE = "runtime.collective_timeout_s, or --rendezvous-timeout"


def meet(nodes: Nodes) -> bool:
    """Before the launcher starts: node 0 says where it listens; another node says what it
    waits for and waits there, at most ``rendezvous_timeout_s``. False (said in one line):
    node 0 never answered.

    Without this, torchrun's agent on a node other than 0 waits for node 0 without a word
    (up to its own 600 s, or longer) and then fails with a traceback that names no node.
    """
    timeout_s = nodes.rendezvous_timeout_s or 600.0
    if nodes.node_rank == 0:
        print(f"harness launch: node 0 of {nodes.nnodes} listens at {nodes.endpoint} for the other nodes "
              f"(up to {timeout_s:g} s)", file=sys.stderr, flush=True)
        return True
    print(f"harness launch: node {nodes.node_rank} of {nodes.nnodes} waits for node 0 at {nodes.endpoint} "
          f"(up to {timeout_s:g} s)", file=sys.stderr, flush=True)
    if _port_answers(nodes.main_address, nodes.main_port, time.monotonic() + timeout_s):
        return True
    print(f"error: node 0 never answered at {nodes.endpoint} within {timeout_s:g} s ({TIMEOUT_SOURCE}): "
          "start it with --node-rank 0 and the same --main-port, or check --main-address", file=sys.stderr)
    return False


def _port_answers(address: str, port: int, deadline: float, poll_s: float = 0.5) -> bool:
    """Whether ``address:port`` takes a TCP connection before ``deadline`` (time.monotonic)."""
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((address, port), timeout=max(0.1, min(5.0, left))):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
