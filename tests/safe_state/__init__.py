"""Nothing lost, nothing half-written: resume, files, signals, sweeps, rank failures.

Each case asserts the exit status, one line on stderr with no traceback, and that
nothing was written or the previous state is intact. The logic is tested in
process; a few cases run the real command; the kill battery (marked slow) kills a
real run with SIGKILL at 10 random instants and resumes it each time.

A package, so its test modules' names (``safe_state.test_files``) cannot clash with
a test module of the same name elsewhere under tests/.
"""
