"""``harness sweep``: the spec, the cells run locally or as Slurm jobs, the sweep file and table."""
