"""Typed errors raised by the library; the CLI turns each into one line and a non-zero exit.

Library code never prints or exits: it raises one of these with a message that names the
file / field / value at fault and what was expected.
"""


class MameError(Exception):
    """Base class of every error the CLI reports as a single line."""


class InputError(MameError, ValueError):
    """A user-supplied file, folder, column or value is unusable."""


class PromptError(InputError):
    """A prompt or attribute value is not part of the prompt vocabulary."""


class ConfigError(InputError):
    """A configuration file is invalid (unknown key, wrong type, bad value)."""


class DataError(InputError):
    """A dataset (raw or prepared) is missing parts or is malformed."""


class ModelError(MameError):
    """A model cannot be found, loaded or used for the asked task (missing weights, offline)."""


class StudyError(InputError):
    """A reader study folder, its protocol, database or ratings are unusable."""
