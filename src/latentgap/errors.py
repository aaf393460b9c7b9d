"""User-facing errors.

Every error a user can fix (bad option, missing file, mismatching checkpoint) derives from
:class:`LatentgapError`. The CLI turns it into one line on stderr and exit code 2; library
callers can catch it. Programming errors stay ordinary Python exceptions.
"""


class LatentgapError(Exception):
    """Bad input that the user can fix; the message says what is wrong and how to fix it."""


class ConfigError(LatentgapError):
    """An invalid option or configuration value."""


class DataError(LatentgapError):
    """A dataset file is missing, corrupt or in the wrong format."""


class CheckpointError(LatentgapError):
    """A checkpoint or run directory is missing, corrupt or does not match the configuration."""


class TrainingDiverged(LatentgapError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class NonFiniteResult(LatentgapError):
    """An evaluation gave NaN or infinite numbers (recorded as null with the reason)."""
