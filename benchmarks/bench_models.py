"""Models and inputs for the benchmarks: Whisper tiny.en's architecture, random weights.

Timings depend on the architecture, not on the weights, so the benchmarks need no weights
package; a bundled real clip gives realistic features and length.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from captum_spes.adapters import ModelAdapter, WhisperAdapter
from captum_spes.data import load_sample

#: explained hypothesis length used by every benchmark (K tokens, K + 1 positions)
NUM_TOKENS = 20


#: (d_model, layers, heads) of the Whisper sizes the benchmarks use
ARCHITECTURES = {"tiny.en": (384, 4, 6), "base.en": (512, 6, 8)}


def tiny_en_architecture(seed: int = 0) -> nn.Module:
    """Whisper tiny.en dimensions (d 384, 4 + 4 layers, 6 heads, vocab 51 864)."""
    return whisper_architecture("tiny.en", seed)


def whisper_architecture(name: str, seed: int = 0) -> nn.Module:
    """An English-only Whisper of the size ``name`` (a key of :data:`ARCHITECTURES`)."""
    d_model, layers, heads = ARCHITECTURES[name]
    config = WhisperConfig(
        vocab_size=51864,
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model,
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


def devices() -> list[str]:
    """CPU always; CUDA when this machine has it."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def chip(device: str) -> str:
    """The processor a figure was measured on."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        return f"{names[0]} ({torch.get_num_threads()} threads)"
    except (OSError, IndexError):
        return f"cpu ({torch.get_num_threads()} threads)"


def load_average() -> float:
    """The 1-minute load average (report it next to every CPU figure)."""
    return round(os.getloadavg()[0], 2)


def textbook_kl(clean: Tensor, perturbed: Tensor, target_ids: Tensor) -> Tensor:
    """KL as captum-spes computed it before the one-pass form (torch.where temporaries)."""
    probs = clean.exp()
    floored = torch.where(torch.isneginf(perturbed), torch.full_like(perturbed, -1.0e4), perturbed)
    terms = torch.where(probs[None] > 0, probs[None] * (clean[None] - floored), torch.zeros_like(floored))
    return terms.sum(dim=-1).clamp_min(0.0)


class PlainWhisperAdapter(WhisperAdapter):
    """Whisper as captum-spes ran it before the cross-attention cache: every row and pass
    projects the encoder output again."""

    logits_from_encoder = ModelAdapter.logits_from_encoder


#: wrapper options and impact of the float32 path before the speed work (whole-batch log-softmax)
PREVIOUS_PATH = {"impact_chunk_bytes": 2**62}
