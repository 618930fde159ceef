"""The two kinds of failure the CLI tells apart.

``BadInput`` is the user's to fix (a config key, a file, a model that does not fit
its data): the CLI prints its one-line message and exits with status 2, before
anything is written. Any other exception during a run is a failed run: status 1,
and the report says ``status: failed``.
"""

from __future__ import annotations

# Exit statuses every command shares; `harness launch` passes a rank's on as its own.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def error_line(err: BaseException) -> str:
    """What the CLI prints for a refusal: ``error:`` and the message on one line, whatever
    the input held (a path or a value with a newline in it)."""
    return "error: " + " ".join(str(err).splitlines())


class BadInput(Exception):
    """Input the harness refuses; the message names the key, file or layer.

    ``key`` is the dotted config key at fault, when there is one: the loader uses it
    to blame the ``KEY=VALUE`` override that set the key rather than the file.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class ConfigValueError(ValueError):
    """Raised by a config dataclass's ``__post_init__`` for one of its fields.

    The loader knows where the dataclass sits in the file and prefixes the
    section path, so the user sees the full dotted key.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
