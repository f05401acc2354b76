"""Errors a user can cause. The CLI prints these as one line, without a traceback."""


class HarnessError(Exception):
    """Base class of every user-facing error: the message is the whole story."""


class ConfigError(HarnessError):
    """A config file or command-line value is wrong."""


class ConversionError(HarnessError):
    """A model cannot be converted (unsupported op, wrong input shape, missing weight)."""


class UnsupportedOpError(ConversionError):
    def __init__(self, op: str, node: str, frontend: str = "MXNet"):
        self.op, self.node = op, node
        super().__init__(f"unsupported {frontend} op '{op}' at node '{node}'")


class InputShapeError(ConversionError):
    """The input shape given does not fit the model."""


class HarnessWarning(UserWarning):
    """Something was skipped and the rest kept (the CLI prints it as one line `warning: ...`)."""
