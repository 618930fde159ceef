"""Child processes: forked helpers and children in their own session."""
