"""Which model ``--model`` names: :data:`MODEL_FACTORIES`, :func:`resolve_model` and the
``--device`` check."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captum_spes.cli._errors import CLIError

#: Extra model names for ``--model``: name -> ``factory(device) -> (model, processor)``.
#: Checked before the embedded models; not listed in ``--help``. The test-suite registers a
#: tiny random Whisper here so that most CLI tests need no pretrained weights.
MODEL_FACTORIES: dict[str, Callable[[str], tuple[Any, Any]]] = {}


def _resolve_device(name: str) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was requested but CUDA is not available here; use --device cpu")
    return name


def resolve_model(name: str, device: str) -> tuple[Any, Any]:
    r"""``(model, processor)`` for ``--model``: a registered factory, an embedded model, a
    local folder or a hub id ``org/name``; any other bare name is refused without the hub.

    Args:
        name (str): the ``--model`` value.
        device (str): ``"cpu"`` or ``"cuda"``.

    Returns:
        *tuple* ``(model, processor)``.

    Raises:
        CLIError: for an unknown name, or when the model cannot be loaded.
    """
    if name in MODEL_FACTORIES:
        return MODEL_FACTORIES[name](device)
    from captum_spes.models import EMBEDDED_MODELS, load_model

    looks_like_path = os.sep in name or name.startswith((".", "~")) or Path(name).expanduser().exists()
    if name not in EMBEDDED_MODELS and not looks_like_path and "/" not in name:
        raise CLIError(
            f"unknown model {name!r}: use an embedded model ({', '.join(sorted(EMBEDDED_MODELS))}), "
            "a local model folder, or a Hugging Face hub id such as 'openai/whisper-tiny.en'"
        )
    return load_model(name, device=device)
