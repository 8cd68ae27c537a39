#!/usr/bin/env python3
"""The self-contained HTML report (structure and content, no browser)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch

from captum_spes import SPESResult
from captum_spes.data import AlignedInterval
from captum_spes.visualization import salient_span, write_html_report

N_MELS, N_FRAMES = 80, 120
TOKENS = [" he", " was", " no", "t", "<|endoftext|>"]


def make_result() -> SPESResult:
    generator = torch.Generator().manual_seed(0)
    inputs = ["<|startoftranscript|>", "<|notimestamps|>"] + TOKENS[:-1]
    result = SPESResult(
        spectrogram_attr=torch.rand(len(TOKENS), N_MELS, N_FRAMES, generator=generator),
        token_attr=torch.rand(len(TOKENS), len(inputs), generator=generator),
        target_ids=[10, 11, 12, 13, 14],
        tokens=list(TOKENS),
        decoder_input_ids=list(range(6)),
        decoder_input_tokens=inputs,
        num_prompt=2,
        target_log_probs=-torch.rand(len(TOKENS)),
        text="".join(TOKENS[:-1]),
        metadata={
            "frame_rate": 100.0,
            "n_masks": 30,
            "seed": 7,
            "model_id": "tiny-whisper",
            "masks_per_level": [10, 10, 10],
            "segments_obtained": [1489, 1489, 1486],
            "versions": {"torch": "2.x", "captum": "0.9.0"},
        },
    )
    result.token_attr = torch.where(result.token_valid_mask(), result.token_attr, torch.zeros(()))
    return result


def payload(text: str) -> dict:
    match = re.search(r"<script type='application/json' id='spes-data'>(.*?)</script>", text, re.S)
    assert match
    return json.loads(match.group(1))


@pytest.fixture
def report(tmp_path):
    waveform = np.sin(np.linspace(0, 300, 19200)).astype(np.float32) * 0.3
    features = torch.randn(1, N_MELS, 3000)
    words = [AlignedInterval(0.1, 0.3, "he"), AlignedInterval(0.3, 0.6, "was")]
    path = write_html_report(make_result(), tmp_path / "r.html", waveform=waveform, features=features, words=words)
    return path, path.read_text(encoding="utf-8")


def test_self_contained(report) -> None:
    path, text = report
    assert path.suffix == ".html" and text.startswith("<!DOCTYPE html>")
    # Offline: no external resources of any kind.
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", text)
    assert "<link rel='stylesheet'" not in text
    assert path.stat().st_size < 400_000


def test_audio_is_embedded_wav(report) -> None:
    _, text = report
    match = re.search(r"<audio id='audio'[^>]*src='data:audio/wav;base64,([A-Za-z0-9+/=]+)'", text)
    assert match
    import io

    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(base64.b64decode(match.group(1))))
    assert rate == 16000 and audio.shape == (19200,)


def test_words_tokens_and_maps(report) -> None:
    _, text = report
    data = payload(text)
    assert data["n_mels"] == N_MELS and data["n_frames"] == N_FRAMES
    for i, word in enumerate(["he", "was", "not", "&lt;|endoftext|&gt;"]):
        assert f"data-word-index='{i}' title=" in text and f">{word}</span>" in text
        assert f"<button class='play-word' data-word-index='{i}'" in text
    for k in range(len(TOKENS)):
        assert "<span class='token" in text and f"data-token-index='{k}'" in text
    assert [w["tokens"] for w in data["words"]] == [[0], [1], [2, 3], [4]]
    # Maps round-trip as uint8 over their own range.
    result = make_result()
    levels = np.frombuffer(base64.b64decode(data["tokens"][1]["map"]), dtype=np.uint8).reshape(N_MELS, N_FRAMES)
    original = result.spectrogram_attr[1].numpy()
    rescaled = levels / 255 * (original.max() - original.min()) + original.min()
    np.testing.assert_allclose(rescaled, original, atol=(original.max() - original.min()) / 255)
    assert data["words"][1]["ref"] == 1 and "map" not in data["words"][1]  # one-token word
    merged = np.frombuffer(base64.b64decode(data["words"][2]["map"]), dtype=np.uint8)
    assert merged.size == N_MELS * N_FRAMES
    assert data["background"] is not None and data["alignment"][1]["label"] == "was"
    for word in data["words"]:
        assert 0 <= word["start"] < word["end"] <= N_FRAMES / 100


def test_token_map_and_metadata(report) -> None:
    _, text = report
    assert "<table id='token-map'>" in text
    # Upper triangle (inputs after a token's position) is blanked: 5 rows x 6 inputs.
    valid = make_result().token_valid_mask()
    assert text.count("<td class='na'>") == int((~valid).sum())
    for key, value in [
        ("n_masks", "30"),
        ("seed", "7"),
        ("model_id", "tiny-whisper"),
        ("masks_per_level", "[10, 10, 10]"),
        ("versions.captum", "0.9.0"),
    ]:
        assert f"<tr><th>{key}</th><td>{value}</td></tr>" in text


def test_overwrite_guard_and_optional_inputs(tmp_path) -> None:
    result = make_result()
    path = write_html_report(result, tmp_path / "plain.html")
    assert "No waveform" in path.read_text(encoding="utf-8")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_html_report(result, path)
    result.token_attr = None
    text = write_html_report(result, path, overwrite=True).read_text(encoding="utf-8")
    assert "No token map" in text and payload(text)["background"] is None
    with pytest.raises(ValueError, match="features"):
        write_html_report(result, tmp_path / "bad.html", features=torch.zeros(1, 40, 3000))


def test_script_cannot_be_closed_by_token_text(tmp_path) -> None:
    result = make_result()
    result.tokens[1] = " </script><b>"
    text = write_html_report(result, tmp_path / "x.html").read_text(encoding="utf-8")
    assert text.count("</script>") == 2  # only the two real script elements end
    assert payload(text)["tokens"][1]["text"] == " </script><b>"


def test_salient_span() -> None:
    profile = np.zeros(300)
    profile[100:110] = 1.0
    profile[250] = 0.5  # outside the peak's run
    start, end = salient_span(profile, 100.0, top_percent=10)
    assert start == pytest.approx(0.95) and end == pytest.approx(1.15)


def test_listenable_explanations_are_embedded(report, tmp_path) -> None:
    import io

    import soundfile as sf

    _, text = report
    data = payload(text)
    clips = re.findall(
        r"<audio class='listen-audio' data-word-index='(\d+)' preload='none' "
        r"src='data:audio/wav;base64,([A-Za-z0-9+/=]+)'",
        text,
    )
    # One clip per word, the end token excluded; each cut to the word's salient region +- 0.25 s.
    assert [int(i) for i, _ in clips] == list(range(len(data["words"]) - 1))
    for index, encoded in clips:
        audio, rate = sf.read(io.BytesIO(base64.b64decode(encoded)))
        word = data["words"][int(index)]
        assert rate == 16000
        assert len(audio) <= (word["end"] - word["start"] + 0.5) * 16000 + 1
    waveform = np.sin(np.linspace(0, 300, 19200)).astype(np.float32) * 0.3
    plain = write_html_report(make_result(), tmp_path / "plain.html", waveform=waveform, listen_top_percent=None)
    assert "<audio class='listen-audio'" not in plain.read_text(encoding="utf-8")
