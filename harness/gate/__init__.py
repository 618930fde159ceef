"""``harness compare``: replicates against replicates, verdicts, the test and the output."""
