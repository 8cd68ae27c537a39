"""Tests of captum_spes.comparison: SPES against Captum baselines on one utterance."""

from __future__ import annotations

import argparse
import csv
import math
import os

import numpy as np
import pytest
import torch
from helpers import WordTokenizer, tiny_whisper, whisper_features

from captum_spes import SPES, SLICMasks, SpeechSeq2SeqWrapper, cli
from captum_spes.comparison import (
    COLUMNS,
    DEFAULT_METHODS,
    ComparisonReport,
    compare,
    count_passes,
)
from captum_spes.comparison.cli import add_compare_arguments, run_compare
from captum_spes.comparison.methods import occlusion_windows
from captum_spes.data import AlignedInterval

NUM_FRAMES = 120
N_MASKS = 6
IG_STEPS = 3
STEP = 10  # 11 deletion/insertion levels
FAMILY = SLICMasks(n_segments=(100, 150))  # ~20 and ~30 segments on 120 frames: fast


@pytest.fixture(autouse=True)
def one_thread():
    # The tiny model is far faster single-threaded; oversubscribed threads make it crawl.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_decoder(clean: torch.Tensor, calls: list[int]):
    """A decode_fn whose text loses words as more of the speech frames change."""

    def decode(batch: torch.Tensor) -> list[str]:
        calls.append(batch.shape[0])
        changed = (batch[..., :NUM_FRAMES] != clean[..., :NUM_FRAMES]).float().mean(dim=(1, 2))
        return [" ".join(["a", "b", "c", "d"][: 4 - int(round(3 * float(c)))]) for c in changed]

    return decode


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_tiny_comparison()
    finally:
        torch.set_num_threads(threads)


def _run_tiny_comparison():
    model = tiny_whisper()
    features = whisper_features(NUM_FRAMES)
    wrapper = SpeechSeq2SeqWrapper(model, WordTokenizer())
    padding = features[..., NUM_FRAMES:].clone()
    seen = {"inputs": 0, "padding_ok": True}
    original = wrapper.adapter.logits

    def watching(decoder_input_ids, model_inputs=None, encoder_outputs=None):
        # Every input that reaches the model must keep Whisper's padding exactly.
        if model_inputs is not None:
            seen["inputs"] += model_inputs.shape[0]
            same = torch.equal(model_inputs[..., NUM_FRAMES:].detach(), padding.expand(model_inputs.shape[0], -1, -1))
            seen["padding_ok"] &= same
        return original(decoder_input_ids, model_inputs=model_inputs, encoder_outputs=encoder_outputs)

    wrapper.adapter.logits = watching
    hypothesis = wrapper.set_hypothesis(features)
    words = [t.strip() for t in hypothesis.tokens[:-1]]
    alignment = [AlignedInterval(0.1 + 0.15 * i, 0.25 + 0.15 * i, w) for i, w in enumerate(words)]
    calls: list[int] = []
    report = compare(
        wrapper,
        features,
        n_masks=N_MASKS,
        feature_mask=FAMILY,
        decode_fn=fake_decoder(features, calls),
        alignments=alignment,
        levels_step=STEP,
        ig_steps=IG_STEPS,
        batch_size=4,
        seed=3,
    )
    del wrapper.adapter.logits
    return {
        "model": model,
        "wrapper": wrapper,
        "features": features,
        "report": report,
        "calls": calls,
        "seen": seen,
        "num_tokens": hypothesis.num_explained,
    }


def test_every_method_gives_finite_speech_maps(setup):
    report, num_tokens = setup["report"], setup["num_tokens"]
    assert report.methods == list(DEFAULT_METHODS)
    assert report.num_frames == NUM_FRAMES
    for row in report.rows:
        assert row.attributions.shape == (num_tokens, 80, NUM_FRAMES), row.method
        assert torch.isfinite(row.attributions).all(), row.method
        assert row.utterance_map.shape == (80, NUM_FRAMES)
        assert torch.isfinite(row.utterance_map).all()
    # Each real method puts non-zero attribution somewhere.
    assert all(row.attributions.abs().sum() > 0 for row in report.rows)


def test_padding_never_perturbed(setup):
    seen = setup["seen"]
    assert seen["inputs"] > 0
    assert seen["padding_ok"]
    # The pass counter restored the adapter's own method.
    assert "logits" not in vars(setup["wrapper"].adapter)


def test_pass_counts_by_construction(setup):
    report, k1 = setup["report"], setup["num_tokens"]
    segments = report.settings["segments_per_level"][0]
    windows = occlusion_windows(NUM_FRAMES, 80, (16, 10), (16, 10))
    assert windows == 5 * 12
    expected = {
        "spes": (1 + N_MASKS, 0),
        "occlusion": (1 + windows, 0),
        "feature_ablation": (1 + segments, 0),
        "integrated_gradients": (k1 * IG_STEPS, k1 * IG_STEPS),
        "saliency": (k1, k1),
        "input_x_gradient": (k1, k1),
        "random": (0, 0),
    }
    for row in report.rows:
        assert (row.forward_passes, row.backward_passes) == expected[row.method], row.method
        assert row.seconds >= 0


def test_spes_row_matches_a_direct_run(setup):
    wrapper, features = setup["wrapper"], setup["features"]
    direct = SPES(wrapper).attribute(
        features, feature_mask=FAMILY, n_masks=N_MASKS, seed=3, token_p=None, perturbations_per_eval=4
    )
    torch.testing.assert_close(setup["report"]["spes"].attributions, direct.spectrogram_attr)


def test_feature_ablation_is_constant_on_segments(setup):
    report = setup["report"]
    labels = FAMILY.segment(setup["features"][0, :, :NUM_FRAMES])[0].labels
    maps = report["feature_ablation"].attributions
    for segment in range(int(labels.max()) + 1):
        values = maps[:, labels == segment]
        torch.testing.assert_close(values, values[:, :1].expand_as(values))


def test_metrics_columns(setup):
    report, calls = setup["report"], setup["calls"]
    levels = 100 // STEP + 1
    # Per method and mode: the clean input plus one input per level.
    assert sum(calls) == len(DEFAULT_METHODS) * 2 * (1 + levels)
    for row in report.rows:
        for name in ("deletion_auc", "insertion_auc", "size_auc"):
            value = getattr(row, name)
            assert 0 <= value <= 100, (row.method, name, value)
        assert 0 <= row.plausibility_mass <= 1
        assert 0 <= row.plausibility_pointing <= 1
        assert row.details["deletion"].levels.numel() == levels
    # Deleting everything changes every frame: the fake decoder then drops 3 of 4 words.
    assert report["random"].details["deletion"].scores[-1] == pytest.approx(75.0)


def test_table_outputs(setup, tmp_path):
    report: ComparisonReport = setup["report"]
    text = report.to_string()
    lines = text.strip().splitlines()
    assert len(lines) == 2 + len(DEFAULT_METHODS)
    assert len({len(line) for line in lines}) == 1  # aligned
    markdown = report.to_markdown()
    assert markdown.count("\n| ") == 1 + len(DEFAULT_METHODS)
    assert all(f"| {m} |" in markdown for m in DEFAULT_METHODS)
    path = report.to_csv(tmp_path / "sub" / "comparison.csv")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == list(COLUMNS)
    assert [r["method"] for r in rows] == list(DEFAULT_METHODS)
    assert int(rows[0]["forward_passes"]) == 1 + N_MASKS
    assert set(report.utterance_maps) == set(DEFAULT_METHODS)


def test_print(setup, capsys):
    setup["report"].print()
    out = capsys.readouterr().out
    assert out.startswith("method") and "integrated_gradients" in out


def test_plot(setup):
    import matplotlib.pyplot as plt

    fig, axes = setup["report"].plot(show=False)
    assert len(axes) == len(DEFAULT_METHODS)
    assert axes[0].get_xlabel() == "time (s)"
    assert axes[0].images[0].get_extent()[1] == pytest.approx(NUM_FRAMES / 100)
    plt.close(fig)


def test_subset_spes_token_passes_and_no_metrics(setup):
    report = compare(
        setup["wrapper"],
        setup["features"],
        methods=["spes", "random"],
        metrics=(),
        n_masks=N_MASKS,
        feature_mask=FAMILY,
        spes_kwargs={"token_p": 0.5, "n_token_masks": 3},
    )
    assert report["spes"].forward_passes == 1 + N_MASKS + 3
    assert math.isnan(report["spes"].deletion_auc) and math.isnan(report["random"].size_auc)
    assert "| - |" in report.to_markdown()


def test_count_passes_restores_on_error(setup):
    wrapper = setup["wrapper"]
    with pytest.raises(RuntimeError):
        with count_passes(wrapper) as counts:
            with torch.no_grad():
                wrapper(setup["features"])
            raise RuntimeError("boom")
    assert counts.forward == 1 and counts.backward == 0
    assert "logits" not in vars(wrapper.adapter)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"methods": ["spes", "lime"]}, "methods"),
        ({"metrics": ["bleu"]}, "metrics"),
        ({"batch_size": 0}, "batch_size"),
        ({"ig_steps": 0}, "ig_steps"),
        ({"num_frames": 10_000}, "num_frames"),
    ],
)
def test_bad_arguments(setup, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare(setup["wrapper"], setup["features"], **kwargs)


def test_batched_features_refused(setup):
    with pytest.raises(ValueError, match="batch 1"):
        compare(setup["wrapper"], setup["features"].expand(2, -1, -1), methods=["random"], metrics=())


def test_deletion_needs_a_decoder(setup):
    wrapper = SpeechSeq2SeqWrapper(setup["model"])  # no processor, no decode_fn
    with pytest.raises(ValueError, match="decode_fn"):
        compare(wrapper, setup["features"], methods=["random"], metrics=["deletion"])


# ----- command line -----------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captum-spes compare")
    add_compare_arguments(parser)
    return parser


def test_cli_arguments():
    args = _parser().parse_args(["a.wav", "--methods", "spes,random", "--n-masks", "5", "--step", "25"])
    assert args.audio == "a.wav" and args.model == "tiny.en"
    assert args.methods == ["spes", "random"] and args.n_masks == 5 and args.step == 25
    assert args.metrics is None  # all metrics the given inputs allow (plausibility needs --alignment)
    with pytest.raises(SystemExit):
        _parser().parse_args(["a.wav", "--methods", "spes,lime"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["a.wav", "--n-masks", "0"])


def test_cli_rejects_long_audio(tmp_path, capsys):
    import soundfile as sf

    path = tmp_path / "long.wav"
    sf.write(str(path), np.full(31 * 16000, 0.1, dtype=np.float32), 16000)
    assert cli.main(["compare", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("captum-spes: error: ") and "30 s" in err  # the CLI's one error policy
    assert not (tmp_path / "out").exists()


def test_cli_missing_inputs(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path / "none.wav"), "--out", str(tmp_path / "out")]) == 1
    assert "captum-spes: error: audio file not found" in capsys.readouterr().err


@pytest.mark.real_model
def test_run_compare_real_model(tmp_path, capsys):
    from captum_spes.data import load_sample

    # The autouse fixture pinned one thread for the tiny model; the real one uses the cores.
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    sample = load_sample("librivox_0880")
    textgrid = sample.path.parent / "sense_and_sensibility_01_austen_64kb-0880.pocketsphinx.TextGrid"
    args = _parser().parse_args(
        [
            str(sample.path),
            "--methods", "spes,random",
            "--n-masks", "4",
            "--metrics", "deletion,size,plausibility",
            "--step", "100",
            "--alignment", str(textgrid),
            "--out", str(tmp_path / "cmp"),
        ]
    )  # fmt: skip
    assert run_compare(args) == 0
    out = capsys.readouterr().out
    assert "spes" in out and "random" in out
    for name in ("comparison.csv", "comparison.md", "comparison.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    with open(tmp_path / "cmp" / "comparison.csv", newline="") as handle:
        rows = {r["method"]: r for r in csv.DictReader(handle)}
    assert int(rows["spes"]["forward_passes"]) == 5
    assert 0 <= float(rows["spes"]["deletion_auc"]) <= 100
    assert 0 <= float(rows["spes"]["plausibility_mass"]) <= 1
