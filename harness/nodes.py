"""Where one launcher sits among the machines of a run: ``harness launch --nnodes/--node-rank``."""

from __future__ import annotations

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
