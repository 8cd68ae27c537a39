"""Models and inputs for the benchmarks: Whisper tiny.en's architecture, random weights.

Timings depend on the architecture, not on the weights, so the benchmarks need no weights
package; a bundled real clip gives realistic features and length.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from captum_spes.data import load_sample

#: explained hypothesis length used by every benchmark (K tokens, K + 1 positions)
NUM_TOKENS = 20


def tiny_en_architecture(seed: int = 0) -> nn.Module:
    """Whisper tiny.en dimensions (d 384, 4 + 4 layers, 6 heads, vocab 51 864)."""
    config = WhisperConfig(
        vocab_size=51864,
        num_mel_bins=80,
        d_model=384,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
        pad_token_id=50256,
        bos_token_id=50256,
        eos_token_id=50256,
        decoder_start_token_id=50257,
    )
    torch.manual_seed(seed)
    return WhisperForConditionalGeneration(config).eval()


def clip_features(name: str = "librivox_0880", seconds: float = None) -> tuple[Tensor, int]:
    """``(1, 80, 3000)`` features of a bundled clip (optionally cut) and its speech frames."""
    sample = load_sample(name)
    waveform = sample.waveform if seconds is None else sample.waveform[: int(seconds * 16000)]
    features = WhisperFeatureExtractor()(waveform, sampling_rate=16000, return_tensors="pt").input_features
    return features, -(-len(waveform) // 160)


def fixed_target() -> list:
    return list(range(1000, 1000 + NUM_TOKENS))


def plain_forwards(wrapper: nn.Module, features: Tensor, n_masks: int, batch: int) -> None:
    """The unavoidable work: one clean pass plus ``n_masks`` perturbed passes, batched."""
    with torch.inference_mode():
        wrapper(features)
        for start in range(0, n_masks, batch):
            size = min(batch, n_masks - start)
            wrapper(features.expand(size, -1, -1).clone())
