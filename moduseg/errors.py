"""Errors a user can act on.

Every error raised on bad input is a ``ModuSegError`` whose message names the
input and the fix; the CLI prints the message without a traceback.
"""


class ModuSegError(Exception):
    """Base class for errors caused by input, files or the environment."""


class InputError(ModuSegError, ValueError):
    """An argument, array or file has the wrong shape, type or content."""


class BankError(ModuSegError):
    """A bank file is unreadable, truncated, or incompatible with the backbone."""


class ModelNotFoundError(ModuSegError, FileNotFoundError):
    """A model file is missing from the model home."""


class BackendUnavailableError(ModuSegError, RuntimeError):
    """A requested backend (TensorRT, CUDA, a GPU) is not usable on this machine."""


class OutputError(ModuSegError):
    """An output path cannot be written: a file in the way, read-only, or a full disk."""


class NoGpuError(BackendUnavailableError):
    """This machine has no NVIDIA GPU to use: no driver, no device or no cuda-python.

    ``auto`` backends fall back to the CPU without a word on such a machine; an
    explicitly requested GPU backend reports it.
    """
