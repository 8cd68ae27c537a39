r"""Command-line interface: ``captum-spes explain | demo | info | compare``.

``captum-spes explain AUDIO`` transcribes one clip with a Whisper model, explains every
generated token with SPES and writes, into ``--out``:

* ``explanation.safetensors``: the :class:`~captum_spes.SPESResult` (``SPESResult.load``);
* ``overview.png``: the utterance map over the spectrogram and, under it, the saliency
  time profile with the words under their spans (or at their saliency peaks);
* ``words.png``: one spectrogram saliency map per word;
* ``token_map.png``: the token-to-token saliency map;
* ``report.html``: a self-contained interactive page with the audio player;
* ``listen/word_XX_<word>.wav`` (``--listen``): each word's top 10 % salient audio;
* ``contrastive.safetensors`` (``--contrast POSITION_OR_WORD:FOIL``, repeatable): a second
  explanation with :class:`~captum_spes.impact.ContrastiveImpact` (the log-probability margin
  of the explained token over the foil), shown beside the plain maps in ``report.html``.

Documented decisions:

* Whisper sees at most 30 s of audio per window; longer audio is refused with one line
  (trim or split it first) rather than silently truncated.
* Existing output files are never replaced unless ``--overwrite`` is given; the check runs
  before any computation.
* ``--model`` accepts an embedded short name (``tiny.en``, ``base``), a local folder or a
  Hugging Face hub id written ``org/name``; any other bare name is refused without
  contacting the hub.
* Errors (:func:`report_errors`, the one policy of every subcommand, ``compare`` included):

  - a user error (:data:`USER_ERRORS`: an :class:`~captum_spes.errors.InputError`, such as a
    bad option, audio file or model, or a missing, existing or unreadable file) is one line
    on stderr, ``captum-spes: error: ...``, exit status 1;
  - anything else is an internal error, a bug: its traceback, then a line saying so and
    asking for a report, also exit status 1 (as Python's own exit on an uncaught exception;
    the traceback is what tells the two apart, status 2 stays argparse's);
  - Ctrl-C is one line, ``captum-spes: interrupted``, exit status 130;
  - ``--debug`` (before or after the subcommand) prints the traceback of user errors too;
  - argparse's own errors (unknown subcommand or option, a value of the wrong type) keep
    its usage message and status 2.

  The library raises :class:`~captum_spes.errors.InputError` for every argument check, so a
  plain ``ValueError`` is treated as the bug it is.
* The audio is read with :func:`~captum_spes.audio.read_audio`, and the line
  ``Audio: ...`` says what was done to it (channels mixed down, resampling); clips shorter
  than one 25 ms analysis window or longer than Whisper's 30 s are refused
  (:func:`~captum_spes.audio.check_clip_length`).

Tests (and power users) can plug in extra models through :data:`MODEL_FACTORIES`.

The package: ``_errors`` (the error policy), ``_models`` (``--model`` and ``--device``),
``_explain`` (``explain`` and ``demo``: one waveform explained, its outputs written),
``_info`` (``info``) and ``_parser`` (:func:`build_parser`); :func:`main` is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# __all__, and (noqa) names that captum_spes.comparison, captum_spes.dataset and the tests import from here.
from captum_spes.cli._errors import USER_ERRORS, CLIError, report_errors
from captum_spes.cli._explain import (  # noqa: F401
    DEMO_BATCH_SIZE,
    DEMO_N_MASKS,
    DEMO_SAMPLE,
    LISTEN_TOP_PERCENT,
    PAPER_N_MASKS,
    SAMPLING_RATE,
    WHISPER_WINDOW_SECONDS,
    _estimator_option,
    refuse_existing_outputs,
    save_figure,
)
from captum_spes.cli._models import MODEL_FACTORIES, resolve_model
from captum_spes.cli._parser import _compare_module, _n_masks_argument, build_parser  # noqa: F401

__all__ = [
    "main",
    "build_parser",
    "report_errors",
    "refuse_existing_outputs",
    "resolve_model",
    "CLIError",
    "USER_ERRORS",
    "MODEL_FACTORIES",
    "WHISPER_WINDOW_SECONDS",
    "PAPER_N_MASKS",
]

#: the stopping rule of ``--n-masks auto`` (the library's ``n_masks="auto"``)
AUTO_RULE: Any = None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``captum-spes`` command line; returns the exit status (module docstring)."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    return report_errors(lambda: args.func(args), debug=args.debug)
