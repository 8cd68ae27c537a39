#!/usr/bin/env python3
r"""Keep transformers' loading chatter off the user's console.

Loading a model prints transformers' own progress bars ("Loading weights", "Writing
model shards") before anything the user asked for, and every Whisper ``generate`` in
transformers 5.x logs a deprecation notice that transformers' Whisper code causes
itself. :func:`quiet_model_loading` hides the bars only while captum-spes loads or
caches a model and restores the previous setting afterwards;
:func:`hide_whisper_generate_notice` drops that one notice and nothing else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["quiet_model_loading", "hide_whisper_generate_notice"]

# transformers' WhisperGenerationMixin.generate passes its own generation_config together with
# suppress_tokens/begin_suppress_tokens to GenerationMixin.generate (to keep them for speculative
# decoding), which then logs this deprecation whatever the caller passed.
_GENERATE_LOGGER = "transformers.generation.utils"
_NOTICE_START = "Passing `generation_config` together with generation-related arguments="
_WHISPER_OWN_ARGUMENTS = frozenset({"suppress_tokens", "begin_suppress_tokens"})


def _no_progress_bar(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from transformers.utils.logging import EmptyTqdm

    return EmptyTqdm(*args, **kwargs)


@contextmanager
def quiet_model_loading() -> Iterator[None]:
    r"""Hide transformers' own progress bars for the duration of the block.

    With transformers' ``set_tqdm_hook`` (5.x) only transformers' bars are replaced
    (model hub downloads keep theirs) and the previous hook is put back; older
    versions toggle ``disable_progress_bar`` and re-enable the bars only if they
    were enabled before. The setting is process-wide while the block runs.
    """
    from transformers.utils import logging as hf_logging

    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if set_hook is not None:
        previous = set_hook(_no_progress_bar)
        try:
            yield
        finally:
            set_hook(previous)
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class _WhisperGenerateNotice(logging.Filter):
    r"""Drops the deprecation notice transformers' Whisper ``generate`` triggers itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_NOTICE_START):
            return True
        named = message[len(_NOTICE_START) :].split(")", 1)[0]
        # A caller who passes other generation arguments beside a generation_config still sees it.
        return set(re.findall(r"'(\w+)'", named)) != _WHISPER_OWN_ARGUMENTS


def hide_whisper_generate_notice() -> None:
    r"""Drop, from now on, the one deprecation notice that every Whisper ``generate`` logs in transformers 5.x.

    The notice ("Passing `generation_config` together with generation-related
    arguments=({'suppress_tokens', 'begin_suppress_tokens'})") names arguments that
    transformers' ``WhisperGenerationMixin.generate`` passes itself, so no caller can act
    on it. The filter matches exactly that set of arguments; every other message of
    transformers' generation logger passes. Calling it again adds nothing.
    """
    logger = logging.getLogger(_GENERATE_LOGGER)
    if not any(isinstance(f, _WhisperGenerateNotice) for f in logger.filters):
        logger.addFilter(_WhisperGenerateNotice())
