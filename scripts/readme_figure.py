#!/usr/bin/env python3
"""Regenerate docs/images/acoustic_corpus_word_saliency.png from a saved explanation.

    captum-spes explain captum_spes/data/samples/acoustic_corpus/acoustic_corpus.wav \
        --n-masks 200 --out /tmp/acoustic        # or SPES(...).attribute(...).save(...)
    python scripts/readme_figure.py /tmp/acoustic/explanation.safetensors
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from transformers import WhisperFeatureExtractor  # noqa: E402

from captum_spes import SPESResult  # noqa: E402
from captum_spes.data import load_sample  # noqa: E402
from captum_spes.visualization import plot_time_profile, plot_word_saliency  # noqa: E402

result = SPESResult.load(sys.argv[1])
sample = load_sample("acoustic_corpus")
features = WhisperFeatureExtractor()(sample.waveform, sampling_rate=16000, return_tensors="pt").input_features
fig, axes = plt.subplots(2, 1, figsize=(11, 7.5))
plot_word_saliency(
    result,
    3,
    features,
    normalize="single_mean_std",
    plt_fig_axis=(fig, axes[0]),
    title=f'Whisper tiny.en, SPES ({result.metadata["n_masks"]} masks): the word "acoustic"',
)
plot_time_profile(
    result, sample.words, plt_fig_axis=(fig, axes[1]), title="Utterance time profile, MFA word alignment below"
)
for ax in axes:
    ax.set_xlim(0, 6)
fig.subplots_adjust(hspace=0.45)
fig.savefig("docs/images/acoustic_corpus_word_saliency.png", dpi=90)
