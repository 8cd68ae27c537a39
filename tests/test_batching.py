"""Batches that do not fit are split: same impacts, a clear error when one pass does not fit."""

import pytest
import torch
from helpers import ToySpeechModel, toy_features

from captum_spes import SPES, InputError, SpeechSeq2SeqWrapper
from captum_spes._utils.batching import BatchSizer, is_out_of_memory
from captum_spes._utils.sampling import MaskSampler


def _batches(n_masks=10, batch=10):
    return list(MaskSampler([4, 3], [6, n_masks - 6], 0.5, 0.5, 5, seed=1).batches(batch))


def test_split_keeps_every_mask_in_order():
    (whole,) = _batches()
    pieces = whole.split(4)
    assert [p.size for p in pieces] == [4, 4, 2] and [p.start for p in pieces] == [0, 4, 8]
    assert torch.equal(torch.cat([p.token_occluded for p in pieces]), whole.token_occluded)
    for level, rows, occluded in whole.level_rows:
        again = [(p.start + r, o) for p in pieces for lv, rr, oo in p.level_rows if lv == level for r, o in zip(rr, oo)]
        assert [int(r) for r, _ in again] == rows.tolist()
        assert torch.equal(torch.stack([o for _, o in again]), occluded)


def _fake_oom(limit):
    calls = []

    def score(batch):
        calls.append(batch.size)
        if batch.size > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.arange(batch.start, batch.start + batch.size, dtype=torch.float64)[:, None].expand(-1, 2)

    return score, calls


def test_backs_off_on_out_of_memory_and_remembers():
    score, calls = _fake_oom(limit=3)
    sizer = BatchSizer(10)
    (batch,) = _batches()
    out = sizer.score(batch, score)
    assert torch.equal(out[:, 0], torch.arange(10, dtype=torch.float64))
    assert sizer.size == 2 and sizer.failures == 2  # 10 -> 5 (fails) -> 2
    calls.clear()
    sizer.score(batch, score)
    assert max(calls) == 2  # no new failure: the remembered size is used


def test_other_errors_pass_through_and_one_pass_too_big_is_clear():
    sizer = BatchSizer(4)
    (batch,) = _batches()
    with pytest.raises(ValueError, match="not a memory error"):
        sizer.score(batch, lambda b: (_ for _ in ()).throw(ValueError("not a memory error")))
    score, _ = _fake_oom(limit=0)
    with pytest.raises(InputError, match="one perturbed pass does not fit"):
        sizer.score(batch, score)
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory")) and not is_out_of_memory(RuntimeError("x"))


def test_spes_gives_the_same_map_when_it_has_to_back_off(monkeypatch):
    features = toy_features()
    plain = SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(features, n_masks=40, token_p=0.5)
    wrapper = SpeechSeq2SeqWrapper(ToySpeechModel())
    original = wrapper.forward

    def forward(inputs, keep=None):
        if inputs.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(inputs, keep)

    monkeypatch.setattr(wrapper, "forward", forward)
    backed_off = SPES(wrapper).attribute(features, n_masks=40, token_p=0.5, perturbations_per_eval=8)
    torch.testing.assert_close(backed_off.spectrogram_attr, plain.spectrogram_attr, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(backed_off.token_attr, plain.token_attr, rtol=1e-5, atol=1e-7)
    assert backed_off.metadata["perturbations_per_eval_used"] == 2 and backed_off.metadata["out_of_memory_retries"] >= 1
