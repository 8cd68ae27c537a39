"""SPESResult: safe save/load, normalisation, word merging, profiles, input layout."""

import pickle

import pytest
import torch

from captum_spes import SPESResult, normalize_reference, single_mean_std

TOKENS = [" He", " was", " n", "ot", ".", "<|endoftext|>"]


def _result(with_tokens=True):
    # Row k of the spectrogram map is k + 1 everywhere, except one known peak in row 3.
    spec = torch.arange(1.0, 7.0)[:, None, None].expand(6, 2, 3).clone()
    spec[3, 0, 0] = 100.0
    # Causal token map (row k credits columns 0..k with one prompt token): entry 10 * k + j.
    rows, cols = torch.arange(6)[:, None], torch.arange(6)[None, :]
    token = torch.where(cols <= rows, 10.0 * rows + cols, torch.zeros(()))
    return SPESResult(
        spectrogram_attr=spec,
        token_attr=token if with_tokens else None,
        target_ids=[10, 11, 12, 13, 14, 99],
        tokens=list(TOKENS),
        decoder_input_ids=[50, 10, 11, 12, 13, 14],
        decoder_input_tokens=["<|sot|>"] + TOKENS[:-1],
        num_prompt=1,
        target_log_probs=torch.tensor([-0.5, -1.0, -0.25, -0.125, -2.0, -0.75]),
        text="He was not.",
        metadata={
            "n_masks": 12,
            "frame_rate": 100.0,
            "input_frames": 5,
            "mask_family": {"family": "slic", "n_segments": [3, 4]},
        },
    )


def _assert_same_result(a, b):
    assert torch.equal(a.spectrogram_attr, b.spectrogram_attr)
    assert (a.token_attr is None and b.token_attr is None) or torch.equal(a.token_attr, b.token_attr)
    assert torch.equal(a.target_log_probs, b.target_log_probs)
    for name in ("target_ids", "tokens", "decoder_input_ids", "decoder_input_tokens", "num_prompt", "text", "metadata"):
        assert getattr(a, name) == getattr(b, name), name


# ----- persistence ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_tokens", [True, False])
def test_save_load_round_trip_is_exact(tmp_path, with_tokens):
    result = _result(with_tokens)
    result.spectrogram_attr[0, 0, 1] = 1.0 / 3.0  # not exactly representable in decimal
    path = result.save(tmp_path / "explanation.safetensors")
    assert path == tmp_path / "explanation.safetensors"
    _assert_same_result(SPESResult.load(path), result)


def test_save_appends_suffix(tmp_path):
    assert _result().save(tmp_path / "run") == tmp_path / "run.safetensors"
    assert _result().save(tmp_path / "run.pt") == tmp_path / "run.pt.safetensors"
    assert _result().save(tmp_path / "sub" / "dir" / "x") == tmp_path / "sub" / "dir" / "x.safetensors"
    assert not list(tmp_path.glob("*.partial"))


def test_save_refuses_to_overwrite(tmp_path):
    path = _result().save(tmp_path / "run.safetensors")
    before = path.read_bytes()
    other = _result()
    other.spectrogram_attr.zero_()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        other.save(path)
    with pytest.raises(FileExistsError):
        other.save(tmp_path / "run")  # same file after the suffix is added
    assert path.read_bytes() == before
    other.save(path, overwrite=True)
    assert SPESResult.load(path).spectrogram_attr.abs().sum() == 0


def test_load_never_unpickles(tmp_path, monkeypatch):
    path = _result().save(tmp_path / "run")

    def refuse(*args, **kwargs):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    _assert_same_result(SPESResult.load(path), _result())


def test_load_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError):
        SPESResult.load(tmp_path / "missing.safetensors")
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match="not a captum-spes result"):
        SPESResult.load(tmp_path / "weights.safetensors")
    save_file(
        {"spectrogram_attr": torch.zeros(1, 1, 1)},
        str(tmp_path / "future.safetensors"),
        metadata={"format": "captum-spes-result", "format_version": "99", "fields": "{}"},
    )
    with pytest.raises(ValueError, match="format version 99"):
        SPESResult.load(tmp_path / "future.safetensors")


# ----- normalisation -------------------------------------------------------------------------


def test_normalize_methods():
    result = _result()
    valid = result.token_valid_mask()
    assert torch.equal(valid, torch.tril(torch.ones(6, 6, dtype=torch.bool)))
    z = result.normalize("single_mean_std")
    spec, tok = single_mean_std(result.spectrogram_attr, result.token_attr, valid)
    assert torch.equal(z.spectrogram_attr, spec) and torch.equal(z.token_attr, tok)
    assert z.metadata["normalization"] == ["single_mean_std"]
    both = result.normalize()
    spec, tok = normalize_reference(result.spectrogram_attr, result.token_attr, valid)
    assert torch.equal(both.spectrogram_attr, spec) and torch.equal(both.token_attr, tok)
    assert z.normalize("paired_min_max").metadata["normalization"] == ["single_mean_std", "paired_min_max"]
    # The stored maps stay raw.
    _assert_same_result(result, _result())
    assert result.normalize().metadata is not result.metadata and "normalization" not in result.metadata


def test_normalize_without_token_map_and_errors():
    normalized = _result(with_tokens=False).normalize("paired_min_max")
    assert normalized.token_attr is None
    assert normalized.spectrogram_attr.min() == 0 and normalized.spectrogram_attr.max() == 1
    with pytest.raises(ValueError, match="method must be one of"):
        _result().normalize("zscore")


# ----- words ---------------------------------------------------------------------------------


def test_word_groups():
    # A piece starting with whitespace opens a word; "." stays with "not"; the end token is alone.
    assert _result().word_groups() == [[0], [1], [2, 3, 4], [5]]


def test_to_words_max_by_hand():
    words = _result().to_words()
    assert words.tokens == [" He", " was", " not.", "<|endoftext|>"]
    assert words.target_ids == [10, 11, 12, 99]
    assert words.decoder_input_ids == [50, 10, 11, 12]
    assert words.decoder_input_tokens == ["<|sot|>", " He", " was", " not."]
    assert words.metadata["word_groups"] == [[0], [1], [2, 3, 4], [5]] and words.metadata["word_reduce"] == "max"
    expected_spec = torch.tensor([1.0, 2.0, 5.0, 6.0])[:, None, None].expand(4, 2, 3).clone()
    expected_spec[2, 0, 0] = 100.0  # token 3's peak survives the max over " n", "ot", "."
    assert torch.equal(words.spectrogram_attr, expected_spec)
    torch.testing.assert_close(words.target_log_probs, torch.tensor([-0.5, -1.0, -2.375, -0.75]))
    # Rows: max over the word's tokens (10 * k + j grows with k); columns: max over the word's inputs.
    expected_token = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],
            [10.0, 11.0, 0.0, 0.0],
            [40.0, 41.0, 42.0, 0.0],  # " not." may not credit itself: causal per word
            [50.0, 51.0, 52.0, 55.0],  # the end token: max(53, 54, 55) over " n", "ot", "."
        ]
    )
    assert torch.equal(words.token_attr, expected_token)
    assert torch.equal(words.token_attr, torch.where(words.token_valid_mask(), words.token_attr, torch.zeros(())))


def test_to_words_mean_and_sum():
    mean = _result(with_tokens=False).to_words("mean")
    assert mean.token_attr is None
    assert mean.spectrogram_attr[2, 1, 1] == 4.0 and mean.spectrogram_attr[2, 0, 0] == (3.0 + 100.0 + 5.0) / 3
    summed = _result().to_words("sum")
    assert summed.spectrogram_attr[2, 1, 1] == 12.0
    with pytest.raises(ValueError, match="reduce must be one of"):
        _result().to_words("median")


# ----- profiles and layouts ------------------------------------------------------------------


def test_time_and_frequency_profiles():
    result = _result()
    time = result.time_profile()
    freq = result.frequency_profile()
    assert time.shape == (6, 3) and freq.shape == (6, 2)
    assert torch.equal(time[3], torch.tensor([52.0, 4.0, 4.0]))  # mean over the 2 mel bins
    assert torch.equal(freq[3], torch.tensor([36.0, 4.0]))  # mean over the 3 frames
    assert torch.equal(result.time_profile("max")[3], torch.tensor([100.0, 4.0, 4.0]))
    assert torch.equal(result.frequency_profile("sum")[0], torch.tensor([3.0, 3.0]))
    with pytest.raises(ValueError):
        result.time_profile("median")


def test_utterance_map():
    result = _result()
    raw = result.utterance_map(normalize=None)
    assert raw.shape == (2, 3)
    torch.testing.assert_close(raw, result.spectrogram_attr.mean(0))
    torch.testing.assert_close(result.utterance_map(), result.normalize().spectrogram_attr.mean(0))


def test_to_input_layout():
    result = _result()
    padded = result.to_input_layout()  # metadata input_frames = 5
    assert padded.shape == (6, 2, 5)
    assert torch.equal(padded[..., :3], result.spectrogram_attr)
    assert torch.equal(padded[..., 3:], torch.zeros(6, 2, 2))
    assert result.to_input_layout(8).shape == (6, 2, 8)
    with pytest.raises(ValueError, match="total_frames"):
        result.to_input_layout(2)


def test_shape_properties_and_repr():
    result = _result()
    assert (result.num_tokens, result.n_mels, result.n_frames) == (6, 2, 3)
    assert result.duration == pytest.approx(0.03) and result.frame_rate == 100.0
    assert result.as_tuple()[0] is result.spectrogram_attr
    assert "He was not." in repr(result) and "n_masks=12" in repr(result)


# ----- uncertainty -----------------------------------------------------------------------------


def _with_statistics():
    """The result above with two units per map (left column / the rest) and known z values."""
    result = _result()
    result.units = torch.tensor([[0, 1, 1], [0, 1, 1]])
    result.unit_occluded = torch.tensor([6.0, 6.0], dtype=torch.float64)
    result.spectrogram_se = torch.full((6, 2), 0.5)
    # Unit 0 is strong evidence for token 3 only; unit 1 for nobody.
    z = torch.zeros(6, 2)
    z[3, 0] = 6.0
    result.spectrogram_z = z
    result.token_occluded = torch.tensor([0.0, 5.0, 5.0, 5.0, 5.0, 5.0], dtype=torch.float64)
    result.token_se = torch.full((6, 6), 0.1)
    tz = torch.zeros(6, 6)
    tz[4, 0] = 9.0  # column 0 was never zeroed: this z must not count
    tz[4, 2] = 9.0
    result.token_z = tz
    return result


def test_uncertainty_round_trips_and_reads_per_element(tmp_path):
    result = _with_statistics()
    loaded = SPESResult.load(result.save(tmp_path / "x.safetensors"))
    for name in ("units", "unit_occluded", "spectrogram_se", "spectrogram_z", "token_occluded", "token_se", "token_z"):
        assert torch.equal(getattr(loaded, name), getattr(result, name)), name
    assert loaded.num_units == 2
    assert loaded.standard_error.shape == (6, 2, 3) and loaded.z_map[3, 1, 0] == 6.0 and loaded.z_map[3, 0, 1] == 0


def test_significance_of_the_spectrogram_and_the_token_map():
    result = _with_statistics()
    significant = result.significance()
    assert significant.shape == (6, 2, 3)
    assert significant[3, :, 0].all() and not significant[3, :, 1:].any()
    assert significant.sum() == 2  # token 3's unit 0 (two elements), nothing else
    tokens = result.significance(of="tokens")
    # (4, 2) is significant; (4, 0) has a large z but column 0 was never zeroed.
    assert tokens[4, 2] and not tokens[4, 0] and tokens.sum() == 1
    assert not result.token_valid_mask()[:, 0].any()
    with pytest.raises(ValueError, match='of must be "spectrogram" or "tokens"'):
        result.significance(of="words")


def test_results_without_statistics_say_so():
    with pytest.raises(ValueError, match="holds no uncertainty"):
        _result().significance()
    with pytest.raises(ValueError, match="holds no uncertainty"):
        _result().standard_error  # noqa: B018


def test_normalize_keeps_z_and_drops_standard_errors():
    normalized = _with_statistics().normalize()
    assert torch.equal(normalized.spectrogram_z, _with_statistics().spectrogram_z)
    assert normalized.spectrogram_se is None and normalized.token_se is None
    assert torch.equal(normalized.significance(), _with_statistics().significance())


def test_never_occluded_elements_are_left_out_of_normalisation():
    result = _with_statistics()
    result.unit_occluded = torch.tensor([6.0, 0.0], dtype=torch.float64)  # unit 1 never occluded
    result.spectrogram_attr[:, :, 1:] = -50.0  # would set every row's minimum if it counted
    normalized = result.normalize("single_mean_std")
    assert torch.equal(normalized.spectrogram_attr[:, :, 1:], torch.zeros(6, 2, 2))
    # Token 3: its valid elements are 100 and 4 (left column): z-scored over those two only.
    torch.testing.assert_close(normalized.spectrogram_attr[3, :, 0], torch.tensor([0.7071, -0.7071]), atol=1e-4, rtol=0)


def test_word_z_is_the_bonferroni_corrected_best_token():
    result = _with_statistics()
    z = torch.zeros(6, 2)
    z[2, 0] = 3.0  # " n" in the word " not." (tokens 2, 3, 4)
    result.spectrogram_z = z
    words = result.to_words()
    # p = 1 - Phi(3) = 0.0013499; times 3 tokens = 0.0040497; z = Phi^-1(1 - 0.0040497) = 2.6483
    assert words.spectrogram_z[2, 0].item() == pytest.approx(2.6483, abs=1e-3)
    assert words.spectrogram_z.shape == (4, 2) and words.spectrogram_se is None
    assert words.token_z.shape == (4, 4)
