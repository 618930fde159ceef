"""``harness launch``: the accelerate command for a mode, the nodes, and the Slurm job side."""
