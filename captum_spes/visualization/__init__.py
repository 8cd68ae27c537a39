#!/usr/bin/env python3
r"""Visualise SPES explanations: matplotlib plots, a self-contained HTML report and
resynthesis of the salient audio.

Matplotlib (``pip install 'captum-spes[viz]'``) is imported only when a plot is drawn.

Example:
    >>> from captum_spes.visualization import plot_token_saliency, write_html_report
    >>> fig, ax = plot_token_saliency(result, 0, features)  # significant regions bright, the rest faint
    >>> write_html_report(result, "report.html", waveform=audio, features=features)
    PosixPath('report.html')
"""

from captum_spes.visualization.listen import (
    mel_to_stft_weights,
    salient_audio,
    salient_mask,
    write_salient_audio,
)
from captum_spes.visualization.plots import (
    as_captum_image,
    hz_to_mel,
    mel_frequencies,
    mel_to_hz,
    plot_time_profile,
    plot_token_map,
    plot_token_saliency,
    plot_utterance_map,
    plot_word_saliency,
    token_index,
)
from captum_spes.visualization.report import salient_span, write_html_report

__all__ = [
    "plot_token_saliency",
    "plot_word_saliency",
    "plot_utterance_map",
    "plot_token_map",
    "plot_time_profile",
    "as_captum_image",
    "mel_frequencies",
    "hz_to_mel",
    "mel_to_hz",
    "token_index",
    "write_html_report",
    "salient_span",
    "salient_audio",
    "salient_mask",
    "mel_to_stft_weights",
    "write_salient_audio",
]
