"""User-facing errors.

Anything a user can cause (bad config, bad data, missing file, no weights offline) raises a subclass of
:class:`DetectFTError`. The CLI prints its message on one line and exits non-zero instead of showing a
traceback; programming errors keep their tracebacks.
"""


class DetectFTError(Exception):
    """A mistake the user can fix; the message names the file or key, what was wrong and the fix."""


class ConfigError(DetectFTError):
    """Unknown key, wrong type or impossible value in a config file or a ``key=value`` override."""


class DataError(DetectFTError):
    """Unreadable or inconsistent annotations or images."""


class WeightsError(DetectFTError):
    """Pretrained or user weights that cannot be found, downloaded or loaded."""
