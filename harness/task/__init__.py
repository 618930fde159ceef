"""Tasks: what differs between workloads (batch, loss, metrics, unit of throughput).

``classification`` is today's image workload; ``causal_lm`` trains language models
and counts tokens. ``TASKS`` maps a config's ``task:`` value to its class.
"""

from harness.task.base import Evaluation, Task
from harness.task.causal_lm import CausalLM
from harness.task.classification import Classification

TASKS = {Classification.name: Classification, CausalLM.name: CausalLM}

__all__ = ["TASKS", "CausalLM", "Classification", "Evaluation", "Task"]
