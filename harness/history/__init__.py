"""The history of runs over commits: a store of entries (store.py), the `history` command."""
