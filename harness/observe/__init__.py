"""What watches a run from outside the loop: the recorder, trackers, metrics.jsonl and the progress line."""
