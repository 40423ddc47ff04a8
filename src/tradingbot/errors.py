"""The base of every error a user can fix by changing an input (a file, a config, an option).

``DataError``, ``ConfigError``, ``CheckpointError`` and ``UnsafeWriteError`` derive from
:class:`UserError`; the command line prints any of them as one ``error: ...`` line (see
:mod:`tradingbot.cli`). They stay ``ValueError`` subclasses so that code catching
``ValueError`` keeps working.
"""

from __future__ import annotations

MAX_VALUE_CHARS = 80


class UserError(ValueError):
    """An input that cannot be used as it is; the message says which and why."""


class ConfigError(UserError):
    """A configuration file or override that does not validate (also exported by
    :mod:`tradingbot.config`)."""


def short_repr(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, so that an error never embeds a huge value.

    The repr of a deeply nested or aliased structure can be megabytes long; it is built with
    :mod:`reprlib` (which itself abbreviates containers) and then truncated.
    """
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlevel = 3
    text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_text(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` on one line (control characters escaped) and cut to ``limit`` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
