"""report.yaml: its schema and reader, where reports come from, and the words for how they were taken."""
