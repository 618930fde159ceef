"""One training run: the mode, the build, the loop, the epochs, checkpoints, resume and finish."""
