"""The GPU checks in one call (scripts/gpu-check.sh): every ``gpu``-marked test and the GPU
figures, judged against their bounds in one table.

measure.py takes figures in this process (the meter on known GPU sleeps and allocations),
runs.py from harness runs on the GPU, verdicts.py judges them (no torch: a recorded
figures file is judged anywhere), __main__.py drives the lot.
"""
