"""``harness bisect``: the first commit of a range whose recipe runs regress against its good end."""
