#!/usr/bin/env python3
r"""Convert CTranslate2 (faster-whisper) Whisper checkpoints to Hugging Face Whisper.

The only pretrained Whisper weights installable from the package index ship as
CTranslate2 ``model.bin`` files. This module reads that binary format (written by
``ctranslate2.specs.ModelSpec._serialize``), renames the variables to the
:class:`~transformers.WhisperForConditionalGeneration` state dict, infers the
``WhisperConfig`` and ``GenerationConfig`` and builds a ``WhisperProcessor`` from the
shipped ``tokenizer.json``. It needs only ``torch`` and ``transformers``: the bytes
are parsed with :mod:`struct`, never unpickled.

File layout (little-endian; ``string`` = u16 length including a trailing NUL, UTF-8
bytes, NUL)::

    u32 binary version (<= 6 supported)
    string spec name, u32 spec revision              (binary version >= 2)
    u32 variable count, then per variable:
        string name, u8 rank, rank x u32 dims, u8 dtype id, u32 byte count, bytes
    u32 alias count, then per alias: string alias, string target   (version >= 3)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from transformers import (
    AddedToken,
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from captum_spes.errors import InputError
from captum_spes.models.quiet import hide_whisper_generate_notice

PathLike = Union[str, "os.PathLike[str]"]

#: Newest ``model.bin`` binary version this reader understands.
MAX_BINARY_VERSION: int = 6

#: CTranslate2 dtype ids (``ctranslate2/specs/model_spec.py``) to torch dtypes.
CT2_DTYPES: dict[int, torch.dtype] = {
    0: torch.float32,
    1: torch.int8,
    2: torch.int16,
    3: torch.int32,
    4: torch.float16,
    5: torch.bfloat16,
}

# Rank-0 variables that configure the CTranslate2 runtime rather than hold weights,
# with the value HF Whisper's architecture implies (None: any value, read elsewhere).
_SCALAR_FLAGS: dict[str, int | None] = {
    "decoder/activation": 3,  # ctranslate2 Activation.GELU (exact erf GELU)
    "decoder/alibi": 0,
    "decoder/alignment_heads": None,
    "decoder/alignment_layer": None,
    "decoder/num_heads": None,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
    "encoder/num_heads": None,
}

# Sub-modules of one transformer layer: CTranslate2 name -> HF module(s). Fused
# projections list several HF modules; the CTranslate2 tensor is split evenly along
# dim 0 in that order.
_LAYER_MODULES: dict[str, tuple[str, ...]] = {
    "self_attention/linear_0": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "self_attention/linear_1": ("self_attn.out_proj",),
    "self_attention/layer_norm": ("self_attn_layer_norm",),
    "attention/linear_0": ("encoder_attn.q_proj",),
    "attention/linear_1": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
    "attention/linear_2": ("encoder_attn.out_proj",),
    "attention/layer_norm": ("encoder_attn_layer_norm",),
    "ffn/linear_0": ("fc1",),
    "ffn/linear_1": ("fc2",),
    "ffn/layer_norm": ("final_layer_norm",),
}

# Modules outside the layers (``{side}`` is encoder or decoder).
_TOP_MODULES: dict[str, str] = {
    "encoder/conv1": "model.encoder.conv1",
    "encoder/conv2": "model.encoder.conv2",
    "encoder/layer_norm": "model.encoder.layer_norm",
    "decoder/layer_norm": "model.decoder.layer_norm",
}

_PARAM_NAMES: dict[str, str] = {
    "weight": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
}

_LAYER_RE = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)/(\w+)$")

# Special tokens registered as ``additional_special_tokens`` (everything between
# <|startoftranscript|> and <|notimestamps|> in the shipped tokenizer.json).
_FIRST_SPECIAL, _LAST_SPECIAL = "<|startoftranscript|>", "<|notimestamps|>"
_NUM_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|> in 0.02 s steps


class ModelLoadError(InputError):
    r"""A model could not be found, verified or converted; the message says how to fix it."""


@dataclass
class CTranslate2Checkpoint:
    r"""The parsed content of a CTranslate2 ``model.bin``.

    Attributes:
        binary_version (int): Format version from the header.
        spec_name (str): Model spec, e.g. ``"WhisperSpec"``.
        spec_revision (int): Revision of the spec.
        variables (dict[str, torch.Tensor]): Tensors by CTranslate2 name, in their
            stored dtype. Aliases are resolved: an alias maps to its target's tensor.
        aliases (dict[str, str]): Alias name -> target variable name.
        sha256 (str): SHA-256 of the (assembled) file, hex.
    """

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str] = field(default_factory=dict)
    sha256: str = ""


# --------------------------------------------------------------------------- reading


def read_model_bytes(paths: Sequence[PathLike], expected_sha256: str | None = None) -> tuple[bytearray, str]:
    r"""Read one ``model.bin`` or its parts, concatenated in order, hashing as it reads.

    Args:
        paths (sequence of path-like): ``[model.bin]`` or ``[part1, part2, ...]``.
        expected_sha256 (str, optional): If given, the SHA-256 (hex) the assembled
            bytes must have.

    Returns:
        tuple[bytearray, str]: The assembled bytes and their SHA-256 (hex).

    Raises:
        ModelLoadError: If a part is missing or the hash does not match.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise ModelLoadError("`paths` is empty: pass the model.bin file or its parts in order.")
    for f in files:
        if not f.is_file():
            raise ModelLoadError(f"CTranslate2 model file not found: {str(f)!r}.")
    data = bytearray(sum(f.stat().st_size for f in files))
    view = memoryview(data)
    digest = hashlib.sha256()
    offset = 0
    chunk = 8 << 20
    for f in files:
        with open(f, "rb") as handle:
            while True:
                n = handle.readinto(view[offset : offset + chunk])
                if not n:
                    break
                # Streamed: hash each chunk as it lands instead of re-reading the file.
                digest.update(view[offset : offset + n])
                offset += n
    if offset != len(data):
        raise ModelLoadError(f"Files changed while reading {[str(f) for f in files]}.")
    sha = digest.hexdigest()
    if expected_sha256 is not None and sha != expected_sha256.lower():
        raise ModelLoadError(
            f"SHA-256 mismatch for {[str(f) for f in files]}: expected {expected_sha256}, "
            f"got {sha}. The file is corrupted or a different version; reinstall the "
            "pinned package version."
        )
    return data, sha


class _Cursor:
    r"""Bounds-checked little-endian reader over a byte buffer."""

    def __init__(self, data: bytes | bytearray, source: str) -> None:
        self.data = data
        self.source = source
        self.pos = 0

    def take(self, size: int, what: str) -> int:
        r"""Reserve ``size`` bytes for ``what`` and return their start offset."""
        start = self.pos
        if start + size > len(self.data):
            raise ModelLoadError(
                f"{self.source} is truncated: {what} needs {size} bytes at offset {start}, "
                f"but the file has {len(self.data)} bytes. Re-download or reinstall it "
                "(for split models, pass all parts in order)."
            )
        self.pos += size
        return start

    def unpack(self, fmt: str, what: str) -> int:
        start = self.take(struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.data, start)[0]

    def string(self, what: str) -> str:
        length = self.unpack("H", what)
        start = self.take(length, what)
        raw = bytes(self.data[start : start + length])
        if length == 0 or raw[-1] != 0:
            raise ModelLoadError(f"{self.source} is corrupted: {what} at offset {start} lacks its NUL.")
        return raw[:-1].decode("utf-8")


def parse_model_bin(data: bytes | bytearray, source: str = "model.bin") -> CTranslate2Checkpoint:
    r"""Parse the bytes of a CTranslate2 ``model.bin``.

    Args:
        data (bytes or bytearray): The whole file. With a ``bytearray`` the returned
            tensors share its memory (no copy).
        source (str, optional): Name used in error messages.

    Returns:
        CTranslate2Checkpoint: Header, variables (aliases resolved) and aliases.

    Raises:
        ModelLoadError: On a binary version above :data:`MAX_BINARY_VERSION`, an
            unknown dtype id, a size mismatch, truncation or trailing bytes.
    """
    if isinstance(data, bytes):
        data = bytearray(data)  # torch.frombuffer needs a writable buffer
    cur = _Cursor(data, source)
    version = cur.unpack("I", "the binary version")
    if version > MAX_BINARY_VERSION:
        raise ModelLoadError(
            f"{source} has CTranslate2 binary version {version}; this reader supports "
            f"versions <= {MAX_BINARY_VERSION}. Use a model converted by ctranslate2 <= 4.x "
            "or update captum-spes."
        )
    spec_name, revision = "", 1
    if version >= 2:
        spec_name = cur.string("the spec name")
        revision = cur.unpack("I", "the spec revision")
    variables: dict[str, torch.Tensor] = {}
    for index in range(cur.unpack("I", "the variable count")):
        name = cur.string(f"the name of variable {index}")
        rank = cur.unpack("B", f"the rank of {name!r}")
        dims = [cur.unpack("I", f"the shape of {name!r}") for _ in range(rank)]
        dtype_id = cur.unpack("B", f"the dtype of {name!r}")
        if dtype_id not in CT2_DTYPES:
            raise ModelLoadError(f"{source}: variable {name!r} has unknown dtype id {dtype_id}.")
        dtype = CT2_DTYPES[dtype_id]
        num_bytes = cur.unpack("I", f"the byte count of {name!r}")
        numel = 1
        for d in dims:
            numel *= d
        if numel * dtype.itemsize != num_bytes:
            raise ModelLoadError(
                f"{source} is corrupted: variable {name!r} of shape {dims} and dtype {dtype} "
                f"should take {numel * dtype.itemsize} bytes, header says {num_bytes}."
            )
        start = cur.take(num_bytes, f"the data of {name!r}")
        if numel == 0:
            tensor = torch.empty(dims, dtype=dtype)
        else:
            tensor = torch.frombuffer(data, dtype=dtype, count=numel, offset=start).reshape(dims)
        variables[name] = tensor
    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(cur.unpack("I", "the alias count")):
            alias = cur.string("an alias name")
            target = cur.string(f"the target of alias {alias!r}")
            if target not in variables:
                raise ModelLoadError(f"{source}: alias {alias!r} points to unknown {target!r}.")
            aliases[alias] = target
            variables[alias] = variables[target]
    if cur.pos != len(data):
        # Extra bytes mean a wrong concatenation order or an extra part: refuse them.
        raise ModelLoadError(
            f"{source} has {len(data) - cur.pos} unexpected trailing bytes after the last "
            "alias. Check that all parts are given once and in order."
        )
    return CTranslate2Checkpoint(version, spec_name, revision, variables, aliases)


def read_ctranslate2_model(paths: Sequence[PathLike], expected_sha256: str | None = None) -> CTranslate2Checkpoint:
    r"""Read and parse ``model.bin`` (or its parts), verifying the SHA-256 if given.

    Args:
        paths (sequence of path-like): The file or its parts, in order.
        expected_sha256 (str, optional): Required SHA-256 of the assembled bytes.

    Returns:
        CTranslate2Checkpoint: The parsed checkpoint, with ``sha256`` set.
    """
    data, sha = read_model_bytes(paths, expected_sha256)
    checkpoint = parse_model_bin(data, source=", ".join(str(p) for p in paths))
    checkpoint.sha256 = sha
    return checkpoint


# --------------------------------------------------------------------------- mapping


def ctranslate2_to_hf_state_dict(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    r"""Rename CTranslate2 Whisper variables to a HF ``WhisperForConditionalGeneration`` state dict.

    Fused projections are split along dim 0 (self-attention ``linear_0`` of shape
    ``(3 * d_model, d_model)`` into q, k, v; cross-attention ``linear_1`` of shape
    ``(2 * d_model, d_model)`` into k, v). The k slice of a fused bias must be zero
    and is dropped, because HF's ``k_proj`` has no bias. ``gamma``/``beta`` become
    ``weight``/``bias``. ``proj_out.weight`` is not produced: it is tied to
    ``model.decoder.embed_tokens.weight``. No values are changed.

    Args:
        variables (dict[str, torch.Tensor]): CTranslate2 variables (aliases resolved).

    Returns:
        dict[str, torch.Tensor]: HF state dict entries, tensors in their stored dtype.

    Raises:
        ModelLoadError: On an unknown or quantized variable, a runtime flag HF Whisper
            cannot reproduce, a non-zero k bias or an untied output projection.
    """
    state: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for name, tensor in variables.items():
        if name in _SCALAR_FLAGS:
            required = _SCALAR_FLAGS[name]
            if required is not None and int(tensor) != required:
                raise ModelLoadError(
                    f"CTranslate2 flag {name!r} is {int(tensor)}, but HF Whisper implies "
                    f"{required}: this checkpoint is not a standard Whisper model."
                )
            continue
        if name == "decoder/projection/weight":
            if not (
                tensor is variables.get("decoder/embeddings/weight")
                or torch.equal(tensor, variables["decoder/embeddings/weight"])
            ):
                raise ModelLoadError(
                    "decoder/projection/weight differs from decoder/embeddings/weight; HF "
                    "Whisper ties them, so this checkpoint cannot be represented."
                )
            continue
        if name.endswith("_scale") or (tensor.dim() > 0 and not tensor.is_floating_point()):
            raise ModelLoadError(
                f"Variable {name!r} is quantized ({tensor.dtype}); only float16/float32/"
                "bfloat16 CTranslate2 models can be converted."
            )
        if name == "decoder/embeddings/weight":
            state["model.decoder.embed_tokens.weight"] = tensor
            continue
        side, _, rest = name.partition("/")
        if rest == "position_encodings/encodings" and side in ("encoder", "decoder"):
            state[f"model.{side}.embed_positions.weight"] = tensor
            continue
        module_name, _, param = name.rpartition("/")
        if module_name in _TOP_MODULES and param in _PARAM_NAMES:
            state[f"{_TOP_MODULES[module_name]}.{_PARAM_NAMES[param]}"] = tensor
            continue
        match = _LAYER_RE.match(name)
        if match is None:
            unknown.append(name)
            continue
        side, layer, sub, param = match.groups()
        if sub not in _LAYER_MODULES or param not in _PARAM_NAMES:
            unknown.append(name)
            continue
        prefix = f"model.{side}.layers.{layer}."
        targets = _LAYER_MODULES[sub]
        hf_param = _PARAM_NAMES[param]
        if tensor.shape[0] % len(targets):
            raise ModelLoadError(f"{name!r} of shape {tuple(tensor.shape)} cannot be split in {len(targets)}.")
        for target, part in zip(targets, tensor.chunk(len(targets), dim=0)):
            if target.endswith("k_proj") and hf_param == "bias":
                if torch.count_nonzero(part):
                    raise ModelLoadError(
                        f"The key bias in {name!r} is not zero; HF Whisper's k_proj has no "
                        "bias, so dropping it would change the model."
                    )
                continue  # dropped: always zero in Whisper
            state[prefix + target + "." + hf_param] = part
    if unknown:
        raise ModelLoadError(
            f"Unknown CTranslate2 Whisper variables (not a WhisperSpec checkpoint?): {sorted(unknown)[:10]}"
        )
    return state


# --------------------------------------------------------------------------- configs


def _token_ids(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    return {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}


def _count_layers(variables: dict[str, torch.Tensor], side: str) -> int:
    layers = {int(m.group(2)) for m in map(_LAYER_RE.match, variables) if m and m.group(1) == side}
    if layers != set(range(len(layers))):
        raise ModelLoadError(f"{side} layers are not numbered 0..n-1: {sorted(layers)}.")
    return len(layers)


def whisper_config_from_ctranslate2(
    variables: dict[str, torch.Tensor],
    ct2_config: dict[str, Any],
    tokenizer_json: dict[str, Any],
) -> WhisperConfig:
    r"""Infer the ``WhisperConfig`` from tensor shapes, the shipped ``config.json`` and tokenizer.

    Args:
        variables (dict[str, torch.Tensor]): CTranslate2 variables.
        ct2_config (dict): The CTranslate2 ``config.json`` (``suppress_ids``,
            ``suppress_ids_begin``, ``alignment_heads``, ``lang_ids``).
        tokenizer_json (dict): The shipped ``tokenizer.json``; gives the special ids
            (pad = bos = eos = ``<|endoftext|>``, decoder start ``<|startoftranscript|>``).

    Returns:
        WhisperConfig: Architecture and special ids of the checkpoint.
    """
    try:
        d_model, num_mel_bins, _ = variables["encoder/conv1/weight"].shape
        vocab_size = variables["decoder/embeddings/weight"].shape[0]
        config = dict(
            d_model=int(d_model),
            num_mel_bins=int(num_mel_bins),
            vocab_size=int(vocab_size),
            encoder_layers=_count_layers(variables, "encoder"),
            decoder_layers=_count_layers(variables, "decoder"),
            encoder_attention_heads=int(variables["encoder/num_heads"]),
            decoder_attention_heads=int(variables["decoder/num_heads"]),
            encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
            decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
            max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
            max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        )
    except KeyError as err:
        raise ModelLoadError(f"Not a CTranslate2 Whisper checkpoint: variable {err} is missing.") from None
    ids = _token_ids(tokenizer_json)
    eot = ids.get("<|endoftext|>")
    if eot is None or ids.get("<|startoftranscript|>") != eot + 1:
        raise ModelLoadError(
            "tokenizer.json must define <|endoftext|> followed by <|startoftranscript|>; got ids "
            f"{eot} and {ids.get('<|startoftranscript|>')}."
        )
    # Published Whisper vocabularies: 51864 ids English-only (<|endoftext|> = 50256),
    # 51865+ multilingual (50257). Catch a tokenizer.json shipped with other weights.
    if vocab_size >= 51864 and eot != (50257 if vocab_size >= 51865 else 50256):
        raise ModelLoadError(
            f"tokenizer.json does not match the weights: vocab_size {vocab_size} implies "
            f"<|endoftext|> = {50257 if vocab_size >= 51865 else 50256}, tokenizer.json has {eot}."
        )
    return WhisperConfig(
        **config,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=eot + 1,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
    )


def whisper_generation_config(
    config: WhisperConfig, ct2_config: dict[str, Any], tokenizer_json: dict[str, Any]
) -> GenerationConfig:
    r"""Build the Whisper ``GenerationConfig`` for the checkpoint, in the fields Whisper's ``generate`` reads.

    The decoder prompt is stated the supported way, not with the deprecated
    ``forced_decoder_ids``: ``generate`` builds it from ``decoder_start_token_id``,
    ``is_multilingual``, ``lang_to_id``, ``task_to_id``, ``task`` and
    ``no_timestamps_token_id``. English-only models get ``<|startoftranscript|>
    <|notimestamps|>``. Multilingual models get ``<|startoftranscript|> <|xx|>
    <|transcribe|> <|notimestamps|>``, the language detected unless ``generate`` is
    given ``language``; ``task`` defaults to ``"transcribe"`` because without a task
    token base degenerates into repetitions.

    Args:
        config (WhisperConfig): From :func:`whisper_config_from_ctranslate2`.
        ct2_config (dict): The CTranslate2 ``config.json``.
        tokenizer_json (dict): The shipped ``tokenizer.json``.

    Returns:
        GenerationConfig: Greedy, no timestamps, ``max_length`` 448.
    """
    ids = _token_ids(tokenizer_json)
    multilingual = config.vocab_size >= 51865
    for token in ("<|notimestamps|>", "<|startofprev|>", "<|transcribe|>", "<|translate|>"):
        if token not in ids:
            raise ModelLoadError(f"tokenizer.json lacks the special token {token}.")
    kwargs: dict[str, Any] = dict(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=list(config.suppress_tokens or []),
        begin_suppress_tokens=list(config.begin_suppress_tokens or []),
        alignment_heads=[list(map(int, h)) for h in ct2_config.get("alignment_heads", [])],
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    if multilingual:
        lang_ids = set(ct2_config.get("lang_ids", []))
        kwargs["lang_to_id"] = {tok: i for tok, i in ids.items() if i in lang_ids}
        kwargs["task_to_id"] = {
            "translate": ids["<|translate|>"],
            "transcribe": ids["<|transcribe|>"],
        }
        kwargs["task"] = "transcribe"
    return GenerationConfig(**kwargs)


def whisper_tokenizer(tokenizer_file: PathLike, config: WhisperConfig) -> WhisperTokenizer:
    r"""Build a ``WhisperTokenizer`` from a shipped ``tokenizer.json``.

    Registers ``<|startoftranscript|>`` ... ``<|notimestamps|>`` as special tokens
    (HF's timestamp decoding starts at ``all_special_ids[-1] + 1``) and adds the 1501
    timestamp tokens ``<|0.00|>`` ... ``<|30.00|>`` the shipped files lack, so that
    ``len(tokenizer) == config.vocab_size``.

    Args:
        tokenizer_file (path-like): The ``tokenizer.json``.
        config (WhisperConfig): Gives the vocabulary size and special ids.

    Returns:
        WhisperTokenizer: Tokenizer covering every id of the model's vocabulary.
    """
    with open(tokenizer_file, encoding="utf-8") as handle:
        ids = _token_ids(json.load(handle))
    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(tokenizer_file),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        predict_timestamps=False,
    )
    first, last = ids[_FIRST_SPECIAL], ids[_LAST_SPECIAL]
    specials = [tok for tok, i in sorted(ids.items(), key=lambda kv: kv[1]) if first <= i <= last]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    missing = config.vocab_size - len(tokenizer)
    if missing not in (0, _NUM_TIMESTAMPS) or last + 1 + _NUM_TIMESTAMPS != config.vocab_size:
        raise ModelLoadError(
            f"tokenizer.json has {len(tokenizer)} tokens; expected {config.vocab_size} "
            f"(or {config.vocab_size - _NUM_TIMESTAMPS} without timestamp tokens)."
        )
    if missing:
        # Plain (non-special, non-normalised) tokens, as in HF's published tokenizers.
        tokenizer.add_tokens(
            [
                AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False, special=False)
                for i in range(_NUM_TIMESTAMPS)
            ]
        )
    if tokenizer.all_special_ids[-1] != last or len(tokenizer) != config.vocab_size:
        raise ModelLoadError("Failed to register Whisper's special and timestamp tokens.")
    return tokenizer


# --------------------------------------------------------------------------- loading


def load_ctranslate2_whisper(
    folder: PathLike,
    *,
    torch_dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    model_files: Sequence[PathLike] | None = None,
    expected_sha256: str | None = None,
) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    r"""Convert a CTranslate2 Whisper folder into a HF model and processor, in memory.

    Args:
        folder (path-like): Folder with ``config.json`` and ``tokenizer.json`` and,
            unless ``model_files`` is given, ``model.bin``.
        torch_dtype (torch.dtype, optional): Dtype of the returned parameters.
            Default: ``torch.float32`` (the float16 source converts losslessly).
        device (str or torch.device, optional): Device of the returned model.
        model_files (sequence of path-like, optional): ``model.bin`` split into parts,
            concatenated in the given order. Default: ``[folder / "model.bin"]``.
        expected_sha256 (str, optional): Required SHA-256 of the assembled ``model.bin``.

    Returns:
        tuple[WhisperForConditionalGeneration, WhisperProcessor]: The model in eval
        mode (``proj_out`` tied to ``embed_tokens``) and its processor (80 or 128 mel
        bins, 16 kHz, 30 s windows).

    Raises:
        ModelLoadError: If files are missing, corrupted, of an unsupported version or
            not a standard Whisper checkpoint.
    """
    folder = Path(folder)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ModelLoadError(f"`torch_dtype` must be a floating torch.dtype, got {torch_dtype!r}.")
    files = [Path(p) for p in model_files] if model_files is not None else [folder / "model.bin"]
    for needed in ("config.json", "tokenizer.json"):
        if not (folder / needed).is_file():
            raise ModelLoadError(f"{str(folder)!r} lacks {needed}: not a CTranslate2 Whisper folder.")
    with open(folder / "config.json", encoding="utf-8") as handle:
        ct2_config = json.load(handle)
    with open(folder / "tokenizer.json", encoding="utf-8") as handle:
        tokenizer_json = json.load(handle)

    checkpoint = read_ctranslate2_model(files, expected_sha256)
    if checkpoint.spec_name not in ("", "WhisperSpec"):
        raise ModelLoadError(f"{files[0]} holds a {checkpoint.spec_name}, not a WhisperSpec.")
    config = whisper_config_from_ctranslate2(checkpoint.variables, ct2_config, tokenizer_json)
    state = ctranslate2_to_hf_state_dict(checkpoint.variables)
    state = {k: v.to(dtype=torch_dtype, copy=True) for k, v in state.items()}
    sha256 = checkpoint.sha256
    del checkpoint  # the raw file buffer can go once every tensor is copied

    # Build on the meta device: random initialisation of tens of millions of
    # parameters would be wasted work, every tensor is assigned below.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    if set(result.missing_keys) != {"proj_out.weight"} or result.unexpected_keys:
        raise ModelLoadError(
            "Converted state dict does not match WhisperForConditionalGeneration: missing "
            f"{sorted(result.missing_keys)[:10]}, unexpected {sorted(result.unexpected_keys)[:10]}."
        )
    model.proj_out.weight = model.model.decoder.embed_tokens.weight  # the CTranslate2 alias
    model.tie_weights()
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        raise ModelLoadError("proj_out.weight is not tied to embed_tokens after loading.")
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta:
        raise ModelLoadError(f"Parameters left uninitialised after conversion: {meta[:10]}.")
    model.generation_config = whisper_generation_config(config, ct2_config, tokenizer_json)
    hide_whisper_generate_notice()
    model.to(device).eval()

    tokenizer = whisper_tokenizer(folder / "tokenizer.json", config)
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    # Provenance for results: which weights were explained.
    model.captum_spes_model_id = f"ctranslate2:{folder} (sha256 {sha256[:8]}…)"
    model.captum_spes_sha256 = sha256
    return model, processor
