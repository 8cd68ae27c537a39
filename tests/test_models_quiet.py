#!/usr/bin/env python3
r"""Tests of :mod:`captum_spes.models.quiet`: transformers' loading chatter hidden, the user's settings kept."""

import logging

import pytest
from transformers.utils import logging as hf_logging

from captum_spes.models.quiet import hide_whisper_generate_notice, quiet_model_loading

_NOTICE = (
    "Passing `generation_config` together with generation-related arguments=({args}) is deprecated and will "
    "be removed in future versions. Please pass either a `generation_config` object OR all generation "
    "parameters explicitly, but not both."
)


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("transformers.generation.utils", logging.WARNING, __file__, 1, message, None, None)


def test_quiet_model_loading_hides_bars_then_restores(capfd: pytest.CaptureFixture[str]) -> None:
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        with quiet_model_loading():
            for _ in hf_logging.tqdm(range(3), desc="Loading weights"):
                pass
        assert "Loading weights" not in capfd.readouterr().err
        for _ in hf_logging.tqdm(range(3), desc="the user's own bar"):
            pass
        assert "the user's own bar" in capfd.readouterr().err
    finally:
        (hf_logging.enable_progress_bar if was_enabled else hf_logging.disable_progress_bar)()


def test_quiet_model_loading_restores_settings_even_on_error() -> None:
    def user_hook(factory, args, kwargs):
        return factory(*args, **kwargs)

    has_hook = hasattr(hf_logging, "set_tqdm_hook")  # transformers 5.x; older ones only have the switch
    previous = hf_logging.set_tqdm_hook(user_hook) if has_hook else None
    was_enabled = hf_logging.is_progress_bar_enabled()
    try:
        with pytest.raises(KeyError), quiet_model_loading():
            raise KeyError("loading failed")
        assert hf_logging.is_progress_bar_enabled() == was_enabled
        if has_hook:
            assert hf_logging.set_tqdm_hook(user_hook) is user_hook
    finally:
        if has_hook:
            hf_logging.set_tqdm_hook(previous)


def test_whisper_generate_notice_dropped_and_nothing_else() -> None:
    hide_whisper_generate_notice()
    hide_whisper_generate_notice()
    logger = logging.getLogger("transformers.generation.utils")
    assert sum(type(f).__name__ == "_WhisperGenerateNotice" for f in logger.filters) == 1
    for order in ("'suppress_tokens', 'begin_suppress_tokens'", "'begin_suppress_tokens', 'suppress_tokens'"):
        assert not logger.filter(_record(_NOTICE.format(args="{" + order + "}")))
    # A caller's own extra argument, or any other message, still gets through.
    assert logger.filter(_record(_NOTICE.format(args="{'suppress_tokens', 'begin_suppress_tokens', 'top_k'}")))
    assert logger.filter(_record(_NOTICE.format(args="{'disable_compile'}")))
    assert logger.filter(_record("Setting `pad_token_id` to `eos_token_id`:50256 for open-end generation."))
