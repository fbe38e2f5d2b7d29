"""Error hierarchy. Library code raises these (``raise ... from err``); only the CLI prints.

Every message names the file, topic or field at fault and, where possible, what to do.
"""

from __future__ import annotations


class DssegError(Exception):
    """Base class of every error dsseg raises on purpose."""


class ConfigError(DssegError):
    """A configuration file or value is missing, malformed or inconsistent."""


class BagError(DssegError):
    """A bag cannot be opened or read (missing, truncated, corrupt, unknown format)."""


class TopicError(BagError):
    """A requested topic is missing from a bag, or has an unexpected message type."""


class MessageError(DssegError):
    """A message cannot be decoded (unknown encoding, size/step mismatch, bad fields)."""


class CalibrationError(DssegError):
    """Calibration is missing or invalid (zero intrinsics, bad extrinsics, missing keys)."""


class SyncError(DssegError):
    """Messages cannot be paired in time."""


class DatasetError(DssegError):
    """A pseudo-labelled dataset is missing, incomplete or inconsistent."""


class CheckpointError(DssegError):
    """A checkpoint or exported model is missing, corrupt or does not match its config."""


class ModelError(DssegError):
    """A model cannot be built, loaded or run (unknown backbone, missing weights, ...)."""


class DependencyError(DssegError):
    """An optional dependency needed for the requested feature is not installed."""
