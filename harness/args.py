"""What every command's argument parsing shares: the parser that fails in one line, and
the ``[CONFIG] [KEY=VALUE ...]`` split. Low enough for every room's command to import."""

from __future__ import annotations

import argparse

from harness.errors import EXIT_BAD_INPUT, BadInput


class OneLineParser(argparse.ArgumentParser):
    """A usage error is bad input like any other: one line naming the option, exit 2 (argparse
    prints the whole usage first, eight lines for `launch`). Subcommands inherit the class."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def split_positionals(items: list[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG] [KEY=VALUE ...]``: the config is the one positional without '='."""
    config = None
    overrides = []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif config is None:
            config = item
        else:
            raise BadInput(f"{item}: a second config file; give one CONFIG and KEY=VALUE overrides")
    return config, overrides
