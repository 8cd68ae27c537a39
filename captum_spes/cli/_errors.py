"""The command line's one error policy: :class:`CLIError`, :data:`USER_ERRORS` and
:func:`report_errors` (the policy itself is described in the :mod:`captum_spes.cli` docstring).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from captum_spes.errors import InputError

#: Errors that mean "bad argument, file or model": reported as one line, no traceback
#: (unless ``--debug``). Every other exception is an internal error.
USER_ERRORS: tuple[type[BaseException], ...] = (
    InputError,
    FileExistsError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)

_PROG = "captum-spes"
_BUG_LINE = (
    f"{_PROG}: internal error: this is a bug in captum-spes, not in your input; please report it "
    f"with the traceback above, the command you ran and the output of `{_PROG} info`"
)


class CLIError(InputError):
    """A user-facing error raised by the command-line interface itself."""


def _error_line(error: BaseException) -> str:
    """One line of text for ``error`` (messages with newlines are folded)."""
    message = " ".join(str(error).split()) or type(error).__name__
    return f"{_PROG}: error: {message}"


def report_errors(command: Callable[[], int | None], *, debug: bool = False) -> int:
    r"""Run ``command`` under the command line's error policy (:mod:`captum_spes.cli`); its exit status.

    Args:
        command (callable): the subcommand, bound to its arguments; returns its exit status
            (None counts as 0).
        debug (bool, optional): also print the traceback of user errors. Default: False

    Returns:
        *int* ``command``'s status; 1 after a user or an internal error, 130 after Ctrl-C.
    """
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if debug:
            traceback.print_exc()
        print(_error_line(error), file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(_BUG_LINE, file=sys.stderr)
        return 1
