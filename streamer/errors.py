"""One exception root for emostream; the command line turns each into one line and an exit code."""

from __future__ import annotations

__all__ = [
    "EmostreamError",
    "InputError",
    "ModelError",
    "DeviceError",
    "ServiceUnavailable",
    "ProtocolError",
    "UsageError",
]


class EmostreamError(Exception):
    """Root of every error emostream raises on purpose.

    Attributes:
        exit_code: the process exit status the command line uses for this error.
    """

    exit_code = 1


class InputError(EmostreamError):
    """Audio that cannot be read: missing, unreadable, empty, corrupt or unsupported."""

    exit_code = 2

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class ModelError(EmostreamError):
    """A model file that is missing, unreadable or does not match its metadata."""

    exit_code = 3


class DeviceError(EmostreamError):
    """An audio device (PortAudio, microphone) that is missing or fails."""

    exit_code = 4


class ServiceUnavailable(EmostreamError):
    """A service emostream depends on cannot be reached (Redis, a Dask scheduler).

    Exit 4, like a missing device: something outside emostream is not there, and retrying later
    (or pointing at another address) can succeed.
    """

    exit_code = 4


class ProtocolError(EmostreamError):
    """A message on the wire that breaks the protocol (bad JSON, wrong type, wrong size)."""

    exit_code = 5


class UsageError(EmostreamError):
    """A bad option or combination of options, or a resource such as a port already in use."""

    exit_code = 64
