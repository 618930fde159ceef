"""Files a run owns: atomic writes, the folder lock, what holds a run, and the capped YAML reader."""
