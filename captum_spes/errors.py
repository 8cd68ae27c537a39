#!/usr/bin/env python3
r"""The library's one user-error type.

:class:`InputError` means *the caller gave a bad argument, file or model*; its message names
the argument and the fix. Everything else the library raises is either a standard error about
the environment (``FileNotFoundError``, ``FileExistsError``, ``PermissionError``, ...) or an
internal error, which is a bug to report. The command line relies on this split: an
``InputError`` is printed as one line, an internal error with its traceback.

``InputError`` subclasses :class:`ValueError`, so ``except ValueError`` keeps catching it;
:class:`InputTypeError` is also a :class:`TypeError`, for arguments of the wrong type.

>>> from captum_spes.errors import InputError
>>> try:
...     raise InputError("n_masks must be a positive int, got 0; pass e.g. n_masks=500")
... except ValueError as error:
...     print(error)
n_masks must be a positive int, got 0; pass e.g. n_masks=500
"""

from __future__ import annotations

__all__ = ["InputError", "InputTypeError"]


class InputError(ValueError):
    """The caller gave a bad argument, file or model; the message names the argument and the fix."""


class InputTypeError(InputError, TypeError):
    """An :class:`InputError` about an argument of the wrong type (also a :class:`TypeError`)."""
