#!/usr/bin/env python3
"""Matplotlib plots of SPES results: types, physical axes, drawn data, Captum interop."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from captum_spes import SPESResult  # noqa: E402
from captum_spes.data import AlignedInterval  # noqa: E402
from captum_spes.visualization import (  # noqa: E402
    as_captum_image,
    hz_to_mel,
    mel_frequencies,
    mel_to_hz,
    plot_time_profile,
    plot_token_map,
    plot_token_saliency,
    plot_utterance_map,
    plot_word_saliency,
)

N_MELS, N_FRAMES = 80, 150  # 1.5 s at 100 frames/s
TOKENS = [" he", " was", " no", "t", "<|endoftext|>"]


def make_result(seed: int = 0) -> SPESResult:
    generator = torch.Generator().manual_seed(seed)
    spec = torch.rand(len(TOKENS), N_MELS, N_FRAMES, generator=generator)
    prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
    inputs = prompt + TOKENS[:-1]
    token_attr = torch.rand(len(TOKENS), len(inputs), generator=generator)
    result = SPESResult(
        spectrogram_attr=spec,
        token_attr=token_attr,
        target_ids=list(range(10, 15)),
        tokens=list(TOKENS),
        decoder_input_ids=list(range(1, 1 + len(inputs))),
        decoder_input_tokens=inputs,
        num_prompt=2,
        target_log_probs=-torch.rand(len(TOKENS)),
        text="".join(TOKENS[:-1]),
        metadata={"frame_rate": 100.0, "n_masks": 30, "seed": 0},
    )
    valid = result.token_valid_mask()
    result.token_attr = torch.where(valid, token_attr, torch.zeros_like(token_attr))
    return result


@pytest.fixture
def result() -> SPESResult:
    return make_result()


@pytest.fixture
def features() -> torch.Tensor:
    # Whisper-shaped input: padded to 3000 frames, the maps cover the first N_FRAMES.
    return torch.randn(1, N_MELS, 3000, generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _tick_hz(ax: Axes) -> list:
    return [float(label.get_text()) for label in ax.get_yticklabels()]


def test_mel_scale_matches_whisper_filter_bank() -> None:
    from transformers import WhisperFeatureExtractor

    bank = WhisperFeatureExtractor().mel_filters  # (201, 80), Slaney scale and norm
    peaks_hz = bank.argmax(axis=0) * 8000.0 / 200
    centres = mel_frequencies(80, 16000)
    assert centres.shape == (80,) and np.all(np.diff(centres) > 0)
    # Peak of each triangle on the 40 Hz STFT grid is within one grid step of the centre.
    assert np.all(np.abs(peaks_hz - centres) <= 40.0 + 1e-6)
    assert np.allclose(mel_to_hz(hz_to_mel([0, 500, 1000, 4000])), [0, 500, 1000, 4000])
    assert hz_to_mel(1000.0) == pytest.approx(15.0)  # Slaney: linear part ends at 15 mels


def test_token_saliency_axes_and_data(result: SPESResult, features: torch.Tensor) -> None:
    fig, ax = plot_token_saliency(result, 1, features)
    assert isinstance(fig, Figure) and isinstance(ax, Axes)
    assert ax.get_xlabel() == "Time (s)"
    assert "Hz" in ax.get_ylabel()
    # Background log-mel in grey, then the saliency overlay.
    background, overlay = ax.images
    assert background.get_cmap().name == "gray"
    np.testing.assert_allclose(np.asarray(background.get_array()), features[0, :, :N_FRAMES].numpy())
    np.testing.assert_allclose(np.asarray(overlay.get_array()), result.spectrogram_attr[1].numpy())
    assert 0 < overlay.get_alpha() < 1
    # Time extent in seconds; mel ticks sit at the bins whose centre has that frequency.
    left, right, _, _ = overlay.get_extent()
    assert (left, right) == (0.0, pytest.approx(1.5))
    centres = mel_frequencies(N_MELS, 16000)
    for position, hz in zip(ax.get_yticks(), _tick_hz(ax)):
        assert np.interp(position, np.arange(N_MELS), centres) == pytest.approx(hz, rel=1e-6)
    assert {500.0, 1000.0, 4000.0} <= set(_tick_hz(ax))
    assert max(ax.get_xlim()) == pytest.approx(1.5)


def test_token_by_text_and_into_given_axis(result: SPESResult) -> None:
    fig0, ax0 = plt.subplots()
    fig, ax = plot_token_saliency(result, "was", plt_fig_axis=(fig0, ax0), show_colorbar=False)
    assert fig is fig0 and ax is ax0
    (image,) = ax.images  # no features: saliency only, opaque
    np.testing.assert_allclose(np.asarray(image.get_array()), result.spectrogram_attr[1].numpy())
    assert "was" in ax.get_title()
    with pytest.raises(ValueError, match="token='nope'"):
        plot_token_saliency(result, "nope")
    with pytest.raises(IndexError):
        plot_token_saliency(result, 7)


def test_word_saliency_merges_subwords(result: SPESResult, features: torch.Tensor) -> None:
    fig, ax = plot_word_saliency(result, 2, features)  # " no" + "t"
    expected = result.spectrogram_attr[[2, 3]].max(dim=0).values.numpy()
    np.testing.assert_allclose(np.asarray(ax.images[-1].get_array()), expected)
    assert "not" in ax.get_title()
    _, ax2 = plot_word_saliency(result, "not", reduce="mean")
    np.testing.assert_allclose(
        np.asarray(ax2.images[-1].get_array()), result.spectrogram_attr[[2, 3]].mean(dim=0).numpy(), rtol=1e-6
    )


def test_utterance_map(result: SPESResult, features: torch.Tensor) -> None:
    fig, ax = plot_utterance_map(result, features)
    np.testing.assert_allclose(np.asarray(ax.images[-1].get_array()), result.utterance_map().numpy(), rtol=1e-6)
    assert ax.get_xlabel() == "Time (s)" and "Hz" in ax.get_ylabel()


def test_token_map_masks_upper_triangle(result: SPESResult) -> None:
    fig, ax = plot_token_map(result)
    data = ax.images[0].get_array()
    assert isinstance(data, np.ma.MaskedArray)
    valid = result.token_valid_mask().numpy()
    np.testing.assert_array_equal(np.ma.getmaskarray(data), ~valid)
    np.testing.assert_allclose(data.data[valid], result.token_attr.numpy()[valid])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["he", "was", "no", "t", "<|endoftext|>"]
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "t"
    result.token_attr = None
    with pytest.raises(ValueError, match="token masks"):
        plot_token_map(result)


def test_time_profile_with_alignment(result: SPESResult) -> None:
    words = [AlignedInterval(0.1, 0.4, "he"), AlignedInterval(0.4, 0.8, "was"), (0.8, 1.3, "not")]
    fig, ax = plot_time_profile(result, words)
    (line,) = ax.lines
    expected = result.normalize("reference").spectrogram_attr.mean(0).mean(0).numpy()
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-6)
    np.testing.assert_allclose(line.get_xdata(), (np.arange(N_FRAMES) + 0.5) / 100)
    texts = {t.get_text(): t for t in ax.texts}
    assert {"he", "was", "not"} <= set(texts)
    assert texts["was"].get_position()[0] == pytest.approx(0.6)  # under its span
    assert any("alignment" in t for t in texts)
    assert ax.get_xlabel() == "Time (s)"


def test_time_profile_without_alignment_uses_peaks(result: SPESResult) -> None:
    fig, ax = plot_time_profile(result, token=1, normalize=None)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), result.time_profile()[1].numpy())
    texts = [t.get_text() for t in ax.texts]
    assert any("saliency peaks" in t for t in texts)  # the figure says how words were placed
    words = result.to_words()
    peak = (int(words.time_profile()[2].argmax()) + 0.5) / 100
    (label,) = [t for t in ax.texts if t.get_text() == "not"]
    assert label.get_position()[0] == pytest.approx(peak)


def test_maps_feed_captum_visualize_image_attr(result: SPESResult) -> None:
    from captum.attr import visualization as viz

    image = as_captum_image(result.spectrogram_attr[0])
    assert image.shape == (N_MELS, N_FRAMES, 1)
    # Low frequencies at the bottom: image row 0 is the top mel bin.
    np.testing.assert_allclose(image[0, :, 0], result.spectrogram_attr[0, -1].numpy())
    fig, ax = viz.visualize_image_attr(
        image, method="heat_map", sign="absolute_value", show_colorbar=True, use_pyplot=False
    )
    assert isinstance(fig, Figure) and ax.images
    fig, ax = viz.visualize_image_attr(
        image, original_image=np.repeat(image, 3, axis=2), method="blended_heat_map", use_pyplot=False
    )
    assert ax.images


def test_profiles_feed_captum_visualize_timeseries_attr(result: SPESResult, monkeypatch) -> None:
    import matplotlib.cm
    from captum.attr import visualization as viz

    # Captum 0.9's visualize_timeseries_attr calls matplotlib.cm.get_cmap, removed in
    # matplotlib 3.9; supply it for the call (matplotlib.colormaps.get_cmap is the successor).
    if not hasattr(matplotlib.cm, "get_cmap"):
        monkeypatch.setattr(matplotlib.cm, "get_cmap", matplotlib.colormaps.get_cmap, raising=False)

    profile = result.time_profile()[1].numpy()[:, None]  # (n_frames, 1) channels-last
    energy = np.random.default_rng(0).random((N_FRAMES, 1))
    seconds = np.arange(N_FRAMES) / result.frame_rate
    fig, ax = viz.visualize_timeseries_attr(
        profile, energy, x_values=seconds, method="overlay_individual", use_pyplot=False
    )
    assert isinstance(fig, Figure)
    axis = ax[0] if isinstance(ax, (list, np.ndarray)) else ax
    assert axis.get_xlim()[1] >= seconds[-1] - 1e-9


def _with_significance(result: SPESResult) -> SPESResult:
    """Two units: frames < 50 (significant for token 1 only) and the rest (never significant)."""
    units = (torch.arange(N_FRAMES) >= 50).long()[None, :].expand(N_MELS, N_FRAMES).clone()
    z = torch.zeros(len(TOKENS), 2)
    z[1, 0] = 8.0
    result.units, result.spectrogram_z = units, z
    result.unit_occluded = torch.tensor([10.0, 10.0], dtype=torch.float64)
    result.spectrogram_se = torch.ones(len(TOKENS), 2)
    return result


def _overlay_alpha(ax: Axes) -> np.ndarray:
    image = ax.get_images()[-1]
    return np.broadcast_to(np.asarray(image.get_alpha()), image.get_array().shape)


def test_not_significant_elements_are_muted_and_the_legend_says_so(result):
    result = _with_significance(result)
    features = np.random.default_rng(0).random((N_MELS, N_FRAMES))
    fig, ax = plot_token_saliency(result, 1, features, alpha=0.6)
    opacity = _overlay_alpha(ax)
    assert np.allclose(opacity[:, :50], 0.6) and np.allclose(opacity[:, 50:], 0.6 * 0.15)
    legend = " ".join(t.get_text() for t in ax.texts)
    assert "significant" in legend and "0.05" in legend and "Monte-Carlo noise" in legend
    assert ax.collections, "the significant region is outlined"
    plt.close(fig)
    # Token 0 has nothing significant: everything is muted and the legend says so.
    fig, ax = plot_token_saliency(result, 0, features, alpha=0.6)
    assert np.allclose(_overlay_alpha(ax), 0.6 * 0.15)
    assert "nothing significant" in " ".join(t.get_text() for t in ax.texts)
    plt.close(fig)


def test_significance_none_or_no_statistics_draws_the_plain_map(result):
    fig, ax = plot_token_saliency(result, 1, alpha=0.6)  # no statistics in this result
    assert np.allclose(_overlay_alpha(ax), 1.0) and not ax.texts
    plt.close(fig)
    fig, ax = plot_token_saliency(_with_significance(result), 1, significance=None)
    assert np.allclose(_overlay_alpha(ax), 1.0) and not ax.texts
    plt.close(fig)


def test_utterance_and_word_maps_mute_too(result):
    result = _with_significance(result)
    fig, ax = plot_utterance_map(result)
    opacity = _overlay_alpha(ax)
    assert np.allclose(opacity[:, :50], 1.0) and np.allclose(opacity[:, 50:], 0.15)  # no features: opaque
    assert "in any token" in " ".join(t.get_text() for t in ax.texts)
    plt.close(fig)
    fig, ax = plot_word_saliency(result, 1)  # " was" is token 1
    assert np.allclose(_overlay_alpha(ax)[:, :50], 1.0) and np.allclose(_overlay_alpha(ax)[:, 50:], 0.15)
    plt.close(fig)
