"""Tests of ``captum_spes.dataset.runner``: audio checks, per-utterance error capture, settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from dataset_helpers import CLIPS, write_tiny_whisper

from captum_spes import SPES, SpeechSeq2SeqWrapper, __version__
from captum_spes.audio import AudioError
from captum_spes.data import load_sample
from captum_spes.dataset.distributed import DistributedContext
from captum_spes.dataset.manifest import Utterance
from captum_spes.dataset.progress import UtteranceProgress
from captum_spes.dataset.runner import (
    ExplainSettings,
    explain_shard,
    explain_utterance,
    generate_kwargs,
    load_waveform,
    utterance_features,
)
from captum_spes.dataset.store import DatasetStore
from captum_spes.errors import InputError
from captum_spes.models import load_model

SETTINGS = ExplainSettings(n_masks=16, seed=5, token_p=0.3, batch_size=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    folder = write_tiny_whisper(tmp_path_factory.mktemp("model") / "tiny-whisper")
    model, processor = load_model(folder)
    return folder, model, processor


def _clip(name: str = CLIPS[0]) -> Utterance:
    return Utterance(id=name, audio=load_sample(name).path, row="m.csv line 2")


def test_audio_longer_than_whisper_s_window_and_missing_audio_are_refused(tmp_path: Path) -> None:
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, 0.1 * np.sin(np.arange(16000 * 31) / 9.0), 16000)
    with pytest.raises(AudioError, match="31.0 s long, but Whisper's window is 30 s"):
        load_waveform(Utterance(id="long", audio=long_clip))
    with pytest.raises(AudioError, match="not found"):
        load_waveform(Utterance(id="gone", audio=tmp_path / "gone.wav"))
    with pytest.raises(ValueError, match="embedded audio must be stored first"):
        load_waveform(Utterance(id="x", audio=Path("x.wav"), audio_bytes=b"RIFF"))
    assert load_waveform(_clip()).shape == load_sample(CLIPS[0]).waveform.shape


def test_generate_kwargs_carry_the_row_s_language_task_and_decoding() -> None:
    row = Utterance(id="x", audio=Path("x.wav"), language="sv", task="translate")
    assert generate_kwargs(row, 1, 0) == {"language": "sv", "task": "translate"}
    assert generate_kwargs(_clip(), 5, 5) == {"num_beams": 5, "no_repeat_ngram_size": 5}


def test_checked_settings_name_the_configuration_but_not_the_batch_size() -> None:
    checked = SETTINGS.checked()
    assert checked["n_masks"] == 16 and checked["seed"] == 5 and checked["token_p"] == 0.3
    assert checked["captum_spes"] == __version__ and "batch_size" not in checked
    assert ExplainSettings(batch_size=64).checked() == ExplainSettings(batch_size=1).checked()
    # The estimator's own settings are part of the configuration, not just its name.
    assert ExplainSettings(estimator="reference").checked()["estimator"] == {"name": "reference"}
    coarse = ExplainSettings(estimator="coarse_to_fine").checked()["estimator"]
    assert coarse["name"] == "coarse_to_fine" and coarse["detail"] == "shrunk"
    # None is the library's default, resolved (and so checked) as SPES.attribute resolves it.
    assert ExplainSettings().checked()["estimator"] == coarse
    assert ExplainSettings(n_masks="auto").checked()["estimator"] == {"name": "reference"}


def test_settings_that_would_fail_every_utterance_are_refused_up_front() -> None:
    with pytest.raises(InputError, match="takes a fixed budget"):
        ExplainSettings(n_masks="auto", estimator="coarse_to_fine").check()
    with pytest.raises(InputError, match="not a registered estimator"):
        ExplainSettings(estimator="median").check()
    ExplainSettings(n_masks="auto").check()
    ExplainSettings(n_masks=16, estimator="coarse_to_fine").check()


@pytest.mark.parametrize("estimator", ["reference", "coarse_to_fine"])
def test_explain_utterance_is_spes_with_the_settings_and_records_the_id(
    tiny: tuple[Path, Any, Any], estimator: str
) -> None:
    _, model, processor = tiny
    spes = SPES(SpeechSeq2SeqWrapper(model, processor))
    result = explain_utterance(spes, _clip(), replace(SETTINGS, estimator=estimator))
    waveform = load_sample(CLIPS[0]).waveform
    features = utterance_features(waveform, spes.forward_func)
    direct = spes.attribute(
        features,
        n_masks=16,
        seed=5,
        token_p=0.3,
        perturbations_per_eval=4,
        num_samples=waveform.shape[0],
        estimator=estimator,
    )
    assert result.metadata["utterance_id"] == CLIPS[0]
    assert result.metadata["estimator"]["name"] == estimator
    assert torch.equal(result.spectrogram_attr, direct.spectrogram_attr)
    assert torch.equal(result.token_attr, direct.token_attr)


def test_explain_shard_records_each_failure_and_goes_on(tiny: tuple[Path, Any, Any], tmp_path: Path) -> None:
    _, model, processor = tiny
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC but not really")
    shard = [Utterance(id="bad", audio=corrupt, row="m.csv line 2"), _clip(CLIPS[1]), _clip(CLIPS[2])]
    store = DatasetStore(tmp_path / "run")
    progress = UtteranceProgress(DistributedContext(), len(shard), len(shard), [], "explained", enabled=False)
    counts = explain_shard(
        shard, store, SETTINGS, rank=3, device="cpu", model=model, processor=processor, progress=progress
    )
    assert counts == (2, 1)
    records = store.records()
    assert records["bad"]["status"] == "failed" and records["bad"]["error"].startswith("AudioError: could not decode")
    assert records["bad"]["row"] == "m.csv line 2" and records["bad"]["rank"] == 3
    assert [records[c]["status"] for c in CLIPS[1:3]] == ["done", "done"]
    assert store.shards.paths() == [store.shards.path(3)]
