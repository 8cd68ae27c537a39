#!/usr/bin/env python3
r"""Reading a test set: CSV / TSV / JSON Lines manifests and local Hugging Face datasets.

A manifest has one row per utterance with the fields

* ``id`` (required): unique name of the utterance; results are keyed by it;
* ``audio`` (required): path of the audio file;
* ``reference`` (optional): reference transcript or translation;
* ``language``, ``task`` (optional): Whisper's ``language`` (e.g. ``en``) and ``task``
  (``transcribe`` or ``translate``) for this utterance;
* ``alignment`` (optional): path of a Praat TextGrid with word intervals (plausibility).

Relative paths are resolved against the manifest's folder. Field names can be mapped onto
other column names (``columns={"reference": "text"}``).

Documented decisions:

* Structural problems are errors before any work starts, naming the row (1-based line number
  of the file, and the id where known): a missing required column, an unknown column (a typo
  such as ``referense`` would otherwise drop every reference silently), an empty required
  value, a duplicate id, an unknown task, a missing alignment file.
* A missing or undecodable audio file is **not** an error here: in a large corpus it is a
  per-utterance problem, recorded as a failure by the runner (with the row in the message).
* A Hugging Face dataset is read only from local files (``datasets.load_from_disk``), never
  from the hub; its audio column is read undecoded (path or embedded bytes) and decoded by
  :func:`captum_spes.audio.load_audio`, as every other file. Columns that no field maps to
  are ignored there (published datasets carry many).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captum_spes.errors import InputError, InputTypeError

__all__ = [
    "FIELDS",
    "REQUIRED_FIELDS",
    "TASKS",
    "ManifestError",
    "Utterance",
    "read_manifest",
    "read_hf_dataset",
]

#: Every field a manifest may have, in the order of the documentation.
FIELDS: tuple[str, ...] = ("id", "audio", "reference", "language", "task", "alignment")
REQUIRED_FIELDS: tuple[str, ...] = ("id", "audio")
TASKS: tuple[str, ...] = ("transcribe", "translate")
_JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
_DELIMITERS = {".csv": ",", ".tsv": "\t"}


class ManifestError(InputError):
    """A manifest that cannot be read as a test set; the message names the row and the fix."""


@dataclass(frozen=True)
class Utterance:
    """One row of a test set.

    Attributes:
        id (str): unique name of the utterance.
        audio (Path): absolute path of the audio file (for embedded audio: the name it had).
        reference (str or None): reference text.
        language (str or None): Whisper ``language`` for this utterance.
        task (str or None): Whisper ``task``, one of :data:`TASKS`.
        alignment (Path or None): absolute path of a TextGrid with word intervals.
        row (str): where the row comes from, e.g. ``"test.csv line 4"``; used in messages.
        audio_bytes (bytes or None): the encoded audio file when a dataset embeds it.
    """

    id: str
    audio: Path
    reference: str | None = None
    language: str | None = None
    task: str | None = None
    alignment: Path | None = None
    row: str = ""
    audio_bytes: bytes | None = None

    def describe(self) -> str:
        """``"<row> (id '<id>')"``, the prefix of every message about this row."""
        return f"{self.row} (id {self.id!r})"


def _column_map(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Field -> column name, every field mapped (to itself unless given)."""
    mapping = {name: name for name in FIELDS}
    for field_name, column in (columns or {}).items():
        if field_name not in FIELDS:
            raise ManifestError(f"columns: unknown field {field_name!r}; the fields are {', '.join(FIELDS)}")
        if not isinstance(column, str) or not column:
            raise ManifestError(f"columns: field {field_name!r} must map to a column name, got {column!r}")
        mapping[field_name] = column
    return mapping


def _resolve(path_text: str, folder: Path) -> Path:
    path = Path(path_text).expanduser()
    return path if path.is_absolute() else (folder / path).resolve()


def _text_value(value: Any, field_name: str, where: str) -> str | None:
    """The field's value as stripped text; None when absent or empty."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ManifestError(f"{where}: {field_name} must be text, got {type(value).__name__} {value!r}")
    text = str(value).strip()
    return text or None


def _build(values: Mapping[str, Any], where: str, folder: Path, audio_bytes: bytes | None = None) -> Utterance:
    """One :class:`Utterance` from a row's field values (already mapped to field names)."""
    fields = {name: _text_value(values.get(name), name, where) for name in FIELDS}
    for name in REQUIRED_FIELDS:
        if fields[name] is None and not (name == "audio" and audio_bytes is not None):
            known = f" (id {fields['id']!r})" if fields["id"] else ""
            raise ManifestError(f"{where}{known}: the {name!r} value is empty; every row needs an id and an audio file")
    identifier = fields["id"]
    label = f"{where} (id {identifier!r})"
    task = fields["task"]
    if task is not None and task not in TASKS:
        raise ManifestError(f"{label}: task must be one of {', '.join(TASKS)}, got {task!r}")
    alignment = None
    if fields["alignment"] is not None:
        alignment = _resolve(fields["alignment"], folder)
        if not alignment.is_file():
            raise ManifestError(
                f"{label}: alignment file {alignment} does not exist; fix the path (relative paths are "
                f"resolved against {folder}) or leave the alignment empty"
            )
    return Utterance(
        id=identifier,
        audio=_resolve(fields["audio"] or identifier, folder),
        reference=fields["reference"],
        language=fields["language"],
        task=task,
        alignment=alignment,
        row=where,
        audio_bytes=audio_bytes,
    )


def _check_unique(utterances: Iterable[Utterance]) -> list[Utterance]:
    seen: dict[str, Utterance] = {}
    rows = list(utterances)
    for utterance in rows:
        if utterance.id in seen:
            raise ManifestError(
                f"{utterance.row}: duplicate id {utterance.id!r} (first at {seen[utterance.id].row}); "
                "ids must be unique"
            )
        seen[utterance.id] = utterance
    if not rows:
        raise ManifestError("the manifest has no rows: add at least one utterance")
    return rows


def _check_header(header: Iterable[str], mapping: dict[str, str], where: str, strict: bool) -> dict[str, str]:
    """Column -> field for the columns present; refuses missing required and unknown columns."""
    present = [column.strip() for column in header]
    by_column = {column: field_name for field_name, column in mapping.items()}
    for field_name in REQUIRED_FIELDS:
        if mapping[field_name] not in present:
            raise ManifestError(
                f"{where}: no {mapping[field_name]!r} column (columns: {', '.join(present) or 'none'}); a manifest "
                f"needs {' and '.join(repr(mapping[f]) for f in REQUIRED_FIELDS)} columns"
            )
    unknown = [column for column in present if column not in by_column]
    if strict and unknown:
        raise ManifestError(
            f"{where}: unknown column {unknown[0]!r}; the known columns are {', '.join(mapping.values())}. "
            f"Remove or rename it, or map a field onto it (--column FIELD={unknown[0]})"
        )
    duplicated = {column for column in present if present.count(column) > 1}
    if duplicated:
        raise ManifestError(f"{where}: column {sorted(duplicated)[0]!r} appears twice")
    return {column: by_column[column] for column in present if column in by_column}


def _read_delimited(path: Path, delimiter: str, mapping: dict[str, str]) -> list[Utterance]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise ManifestError(f"{path} is empty: the first line must name the columns (id{delimiter}audio...)")
        fields_of = _check_header(header, mapping, f"{path.name} line 1", strict=True)
        columns = [column.strip() for column in header]
        rows = []
        for values in reader:
            where = f"{path.name} line {reader.line_num}"
            if not any(value.strip() for value in values):
                continue  # blank line
            if len(values) != len(columns):
                raise ManifestError(
                    f"{where}: {len(values)} values for {len(columns)} columns; quote values holding "
                    f"{'commas' if delimiter == ',' else 'tabs'}"
                )
            named = {fields_of[c]: v for c, v in zip(columns, values) if c in fields_of}
            rows.append(_build(named, where, path.parent))
    return rows


def _read_json_lines(path: Path, mapping: dict[str, str]) -> list[Utterance]:
    rows = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            where = f"{path.name} line {number}"
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(f"{where}: not valid JSON ({error.msg}); write one JSON object per line") from None
            if not isinstance(record, dict):
                raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
            fields_of = _check_header(record.keys(), mapping, where, strict=True)
            rows.append(_build({fields_of[k]: v for k, v in record.items() if k in fields_of}, where, path.parent))
    return rows


def read_manifest(
    path: str | os.PathLike[str],
    *,
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
) -> list[Utterance]:
    r"""Read a test set.

    Args:
        path (str or path-like): a ``.csv``, ``.tsv`` or ``.jsonl`` manifest, or a folder
            written by ``datasets.Dataset.save_to_disk`` (needs the ``[datasets]`` extra).
        columns (mapping, optional): field -> column name, e.g. ``{"reference": "text"}``.
        split (str, optional): split of a saved ``DatasetDict``, e.g. ``"test"``.

    Returns:
        *list of Utterance* in manifest order.

    Raises:
        ManifestError: for an unreadable manifest; the message names the row.
        FileNotFoundError: if ``path`` does not exist.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"manifest {source} does not exist")
    mapping = _column_map(columns)
    if source.is_dir():
        return read_hf_dataset(_load_from_disk(source, split), columns=columns, root=source)
    if split is not None:
        raise ManifestError(f"split={split!r} applies to a saved Hugging Face dataset folder, not to {source.name}")
    suffix = source.suffix.lower()
    if suffix in _DELIMITERS:
        return _check_unique(_read_delimited(source, _DELIMITERS[suffix], mapping))
    if suffix in _JSON_LINES_SUFFIXES:
        return _check_unique(_read_json_lines(source, mapping))
    raise ManifestError(
        f"manifest {source.name}: unknown format {suffix or '(no suffix)'!r}; use .csv, .tsv, .jsonl, or a folder "
        "saved with datasets' save_to_disk"
    )


def _datasets_module() -> Any:
    try:
        import datasets
    except ImportError:
        raise ManifestError(
            "reading a Hugging Face dataset needs the datasets package: pip install 'captum-spes[datasets]'"
        ) from None
    return datasets


def _load_from_disk(folder: Path, split: str | None) -> Any:
    datasets = _datasets_module()
    try:
        loaded = datasets.load_from_disk(str(folder))
    except FileNotFoundError as error:
        raise ManifestError(
            f"{folder} is a folder but not a dataset saved with datasets' save_to_disk ({error}); give a .csv, "
            ".tsv or .jsonl manifest or such a folder"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is None or split not in loaded:
            raise ManifestError(
                f"{folder} holds the splits {', '.join(loaded)}; choose one with --split (split={split!r})"
            )
        return loaded[split]
    if split is not None:
        raise ManifestError(f"{folder} holds a single dataset without splits; drop --split")
    return loaded


def read_hf_dataset(
    dataset: Any, *, columns: Mapping[str, str] | None = None, root: str | os.PathLike[str] | None = None
) -> list[Utterance]:
    r"""Read a Hugging Face ``datasets.Dataset`` whose ``audio`` column is an ``Audio`` feature.

    The audio column is cast to ``Audio(decode=False)``, so nothing is decoded or downloaded
    here: each row gives an audio file path (resolved against ``root``) or the embedded bytes.

    Args:
        dataset (datasets.Dataset): e.g. from ``datasets.load_from_disk`` or ``Dataset.from_dict``.
        columns (mapping, optional): field -> column name, e.g. ``{"reference": "text"}``.
        root (path-like, optional): folder that relative paths are resolved against.
            Default: the working directory.

    Returns:
        *list of Utterance*; ``row`` reads ``"dataset row N"`` (1-based).
    """
    datasets = _datasets_module()
    if not isinstance(dataset, datasets.Dataset):
        raise InputTypeError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}")
    mapping = _column_map(columns)
    fields_of = _check_header(dataset.column_names, mapping, "dataset", strict=False)
    audio_column = mapping["audio"]
    if not isinstance(dataset.features[audio_column], datasets.Audio):
        raise ManifestError(
            f"dataset: column {audio_column!r} is a {type(dataset.features[audio_column]).__name__}, not an Audio "
            "feature; cast it with dataset.cast_column(name, datasets.Audio())"
        )
    dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    folder = Path(root) if root is not None else Path.cwd()
    rows = []
    for number, record in enumerate(dataset, start=1):
        named = {fields_of[c]: v for c, v in record.items() if c in fields_of}
        audio = named.pop("audio") or {}
        named["audio"] = audio.get("path")
        rows.append(_build(named, f"dataset row {number}", folder, audio_bytes=audio.get("bytes")))
    return _check_unique(rows)
