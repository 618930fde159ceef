"""The commands that reload a finished run's model: evaluate, predict, the inference bench."""
