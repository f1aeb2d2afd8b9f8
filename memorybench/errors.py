"""User-facing errors.

Every error a user can cause (bad name, bad config, missing file) is a
``MemorybenchError``: the CLI prints its message as one line and exits non-zero,
and shows the traceback only with ``--debug``.
"""


class MemorybenchError(Exception):
    """An error whose message alone tells the user what to fix."""


class UnknownNameError(MemorybenchError, KeyError):
    """A method, detector, metric or suite name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(MemorybenchError, ValueError):
    """A config key that does not exist, or a value of the wrong type."""


class PluginError(MemorybenchError, ImportError):
    """A plugin module or entry point that failed to import."""


class ModelError(MemorybenchError, FileNotFoundError):
    """A model folder or weights file that is missing or malformed."""


class DataError(MemorybenchError, FileNotFoundError):
    """A dataset file or folder that is missing or malformed."""


class ValidationError(MemorybenchError):
    """A method that breaks the reversibility contract, or a result that breaks the schema."""


class NonFiniteOutputError(MemorybenchError, ArithmeticError):
    """Generation gave NaN or Infinity: a setting overflowed, or the weights are broken.
    Such images would decode to flat black and score as "no copy", so they are refused."""
