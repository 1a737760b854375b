"""Error types. ``dllmrl.cli.main`` turns a ``DllmrlError`` into one red line."""


class DllmrlError(Exception):
    """An error the user can fix; its message says how."""


class ConfigError(DllmrlError):
    """An option or combination of options is invalid."""


class UnknownNameError(DllmrlError, KeyError):
    """A registry lookup failed (unknown task, method, model family...)."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ModelLoadError(DllmrlError):
    """A model or adapter could not be found or loaded."""


class DataError(DllmrlError):
    """A data file is missing or malformed."""


class OutputError(DllmrlError):
    """An output directory cannot be used: not a directory, not writable, full, or held by another run."""
