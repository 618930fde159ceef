"""The run's configuration: its typed sections, the raw and strict YAML under them, the recipe hash."""
