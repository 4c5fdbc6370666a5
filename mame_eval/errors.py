"""Typed errors raised by the library; the CLI turns each into one line and a non-zero exit.

Library code never prints or exits: it raises one of these with a message that names the
file / field / value at fault and what was expected.
"""


class MameError(Exception):
    """Base class of every error the CLI reports as a single line.

    Args:
        message: what is wrong and what was expected. When the error is about one argument of
            the library function, the message starts with that parameter's name
            (``"guidance_scale -1: expected >= 0"``) and ``param`` names it, so that the CLI
            can say the flag its user typed instead (``"--guidance -1: expected >= 0"``).
        param: the library parameter at fault, or None.
    """

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


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
