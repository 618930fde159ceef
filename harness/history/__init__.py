"""Regression history: a store of runs over commits (store.py), change points in its series
(changepoints.py), the CI check (check.py) and the trend page (show.py); the `history` command."""
