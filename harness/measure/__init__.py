"""Measurement: clocks, counters and samplers that the loop calls at step boundaries."""
