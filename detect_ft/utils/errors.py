"""User-facing errors.

Anything a user can cause (bad config, bad data, missing file, no weights offline) raises a subclass of
:class:`DetectFTError`. The CLI prints its message on one line and exits non-zero instead of showing a
traceback; programming errors keep their tracebacks.
"""

import re

# torch's DataLoader re-raises an error from a worker process as the same type, built from a message
# that holds the worker's whole traceback; the last line is the original "module.Type: message".
_WORKER_MESSAGE = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback", re.S)


class DetectFTError(Exception):
    """A mistake the user can fix; the message names the file or key, what was wrong and the fix."""

    def __init__(self, message: str = "", *args) -> None:
        if isinstance(message, str) and _WORKER_MESSAGE.match(message):
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message, *args)


class ConfigError(DetectFTError):
    """Unknown key, wrong type or impossible value in a config file or a ``key=value`` override."""


class DataError(DetectFTError):
    """Unreadable or inconsistent annotations or images."""


class WeightsError(DetectFTError):
    """Pretrained or user weights that cannot be found, downloaded or loaded."""


class ArgumentTypeError(ConfigError, TypeError):
    """A Python API argument of a type the function does not take (``Detector.load(123)``); the message
    names the function, the argument and what it takes. Also a TypeError, as Python's own would be."""
