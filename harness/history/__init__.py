"""Regression history: a store of runs over commits, change points, and the CI check."""
