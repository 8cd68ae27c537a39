#!/usr/bin/env python3
r"""The output directory of a dataset run: results, index, settings; crash-safe.

Layout of ``DIR``::

    settings.json               the settings every result was made with (checked on rerun)
    results/<key>.safetensors   one SPESResult per utterance, key = safe file name of its id
    audio/<key>.<ext>           audio that a dataset embeds (so the evaluation can read it)
    index/rank-<r>.jsonl        the records written by rank r (appended, one JSON object a line)
    index.jsonl                 the merged index: one record per id (rank 0, at the end)

Crash safety rests on three rules:

* every file that is replaced is written to a temporary file in the same folder, flushed
  and fsynced, then moved into place with :func:`os.replace` (atomic on POSIX), and the
  folder is fsynced, so a reader sees the old file or the new one, never a mix;
* a record is appended (and fsynced) only **after** its result file is in place, and it
  stores the file's size; an utterance counts as done only when a ``done`` record exists
  **and** its file exists with that size. A run killed at any moment therefore loses at
  most the utterances in flight: they have no record, and are redone;
* a line torn by a crash is skipped when reading, and the next append starts on a new line.

Record fields: ``id``, ``key``, ``status`` (``done`` or ``failed``), ``hypothesis``,
``n_masks`` (masks used), ``seconds``, ``rank``, ``error`` (failures: the exception's type
and message), ``result`` (path relative to ``DIR``), ``bytes``, ``finished_at`` (UTC, ISO
8601), ``device``, and the manifest row (``row``, ``audio``, ``reference``, ``language``,
``task``, ``alignment``) so that ``captum-spes evaluate DIR`` needs nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from captum_spes.dataset.manifest import Utterance
from captum_spes.errors import InputError

__all__ = [
    "DONE",
    "FAILED",
    "SettingsMismatchError",
    "DirectoryInUseError",
    "DatasetStore",
    "check_unique_keys",
    "RecordShards",
    "atomic_write",
    "atomic_write_text",
    "utterance_key",
    "settings_differences",
    "check_settings_file",
]

DONE = "done"
FAILED = "failed"
_SETTINGS = "settings.json"
_RESULTS = "results"
_SHARDS = "index"
_INDEX = "index.jsonl"
_LOCK = ".lock"
_AUDIO = "audio"
#: what the names of temporary files contain (``captum_spes._utils.files.atomic_write``)
_TEMPORARY_MARK = ".partial"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SettingsMismatchError(InputError):
    """The settings of a run differ from the ones already stored in its output directory."""


class DirectoryInUseError(InputError):
    """Another run is writing into the same output directory."""


def utterance_key(identifier: str) -> str:
    r"""A safe, unique file name stem for an utterance id.

    The id's safe characters (letters, digits, ``.``, ``_``, ``-``; at most 64) keep it
    readable; a SHA-256 prefix of the exact id keeps ids apart that differ only in unsafe
    characters or in case (case-insensitive file systems), e.g. ``"a/b"`` and ``"a b"``.
    """
    readable = _UNSAFE.sub("_", identifier).strip("._-")[:64] or "utterance"
    digest = hashlib.sha256(identifier.encode("utf-8")).hexdigest()[:12]
    return f"{readable}-{digest}"


def _fsync_folder(folder: Path) -> None:
    # A rename is durable only once the folder entry is on disk; not possible on every OS.
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    r"""Create or replace ``path`` atomically and durably.

    :func:`captum_spes._utils.files.atomic_write` (a temporary file in the same folder, then
    :func:`os.replace`), with the temporary file fsynced before the rename and the folder
    after it, so that a crash of the machine cannot leave a renamed but empty file either.

    Args:
        path (path-like): the final file.
        write (callable): ``write(temporary_path)`` writes the complete file there (same
            folder, same suffix).

    Returns:
        *Path* of the file, in place.
    """
    from captum_spes._utils.files import atomic_write as replace_atomically

    target = Path(path)
    with replace_atomically(target) as temporary:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_folder(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def settings_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"name: stored -> current"`` for every setting that differs (missing counts as None)."""
    names = sorted(set(stored) | set(current))
    return [f"{n}: {stored.get(n)!r} -> {current.get(n)!r}" for n in names if stored.get(n) != current.get(n)]


def check_settings_file(path: str | os.PathLike[str], settings: Mapping[str, Any], *, mix: bool, fix: str) -> None:
    r"""Store ``settings`` in a new ``path``, or check them against the stored ones.

    Args:
        path (path-like): the JSON settings file.
        settings (mapping): JSON-serialisable settings of this run.
        mix (bool): accept different settings; the stored ones are kept under ``previous``
            and replaced by ``settings``.
        fix (str): what the user can do, appended to the error message.

    Raises:
        SettingsMismatchError: if the settings differ and ``mix`` is False; the message names
            every differing setting.
    """
    target = Path(path)
    if target.exists():
        stored = json.loads(target.read_text(encoding="utf-8"))
        previous = stored.pop("previous", [])
        differences = settings_differences(stored, settings)
        if not differences:
            return
        if not mix:
            raise SettingsMismatchError(
                f"{target.parent} holds results made with other settings ({'; '.join(differences)}); {fix}"
            )
        settings = {**settings, "previous": [*previous, stored]}
    atomic_write_text(target, json.dumps(dict(settings), indent=2, sort_keys=True) + "\n")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def _read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one file; lines torn by a crash (not JSON objects) are skipped."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record and "status" in record:
                yield record


class RecordShards:
    r"""Append-only JSON Lines files of records, one per rank: ``<folder>/rank-<r>.jsonl``.

    Args:
        folder (path-like): where the shards live.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, rank: int) -> Path:
        return self.folder / f"rank-{rank}.jsonl"

    def paths(self) -> list[Path]:
        return sorted(self.folder.glob("rank-*.jsonl")) if self.folder.is_dir() else []

    def append(self, rank: int, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append one record (adding ``rank`` and ``finished_at``), fsynced; returns it."""
        written = {**record, "rank": rank, "finished_at": _now()}
        path = self.path(rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")  # the previous run was killed mid-line
            handle.write((json.dumps(written, ensure_ascii=False) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        return written

    def latest(self, is_complete: Callable[[Mapping[str, Any]], bool]) -> dict[str, dict[str, Any]]:
        r"""The current record of every id.

        A complete ``done`` record (``is_complete``) wins over any failure; among records of
        the same status the latest (``finished_at``) wins; incomplete ``done`` records do
        not count.
        """
        best: dict[str, dict[str, Any]] = {}
        for shard in self.paths():
            for record in _read_records(shard):
                if record["status"] == DONE and not is_complete(record):
                    continue
                held = best.get(record["id"])
                if (
                    held is None
                    or (record["status"] == DONE and held["status"] != DONE)
                    or (
                        record["status"] == held["status"]
                        and record.get("finished_at", "") >= held.get("finished_at", "")
                    )
                ):
                    best[record["id"]] = record
        return best


class DatasetStore:
    r"""The output directory of one dataset run (see the module docstring for its layout).

    Args:
        root (path-like): the directory; created when missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--out {self.root} exists and is not a directory; choose a directory")
        self.results_dir = self.root / _RESULTS
        self.shards = RecordShards(self.root / _SHARDS)
        self.index_path = self.root / _INDEX
        self.settings_path = self.root / _SETTINGS
        self._lock_handle: IO[str] | None = None

    # ----- settings -----------------------------------------------------------------
    def read_settings(self) -> dict[str, Any] | None:
        """The stored settings, or None for a new directory."""
        if not self.settings_path.exists():
            return None
        return json.loads(self.settings_path.read_text(encoding="utf-8"))

    def check_settings(self, settings: Mapping[str, Any], *, mix: bool = False) -> None:
        """:func:`check_settings_file` for this directory's ``settings.json``."""
        check_settings_file(
            self.settings_path,
            settings,
            mix=mix,
            fix="use another --out directory, or pass --mix-settings to add results made with the new settings",
        )

    # ----- locking and cleaning -----------------------------------------------------
    def lock(self) -> None:
        """Refuse a second run writing into the same directory at the same time.

        Uses ``flock``, which the operating system releases when the process dies, so a
        killed run never leaves a stale lock behind.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX: no lock
            return
        handle = open(self.root / _LOCK, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise DirectoryInUseError(
                f"another captum-spes run is writing into {self.root}; wait for it to finish or use another --out"
            ) from None
        self._lock_handle = handle

    def unlock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def remove_temporary_files(self) -> int:
        """Delete temporary files left by a killed run; returns how many. Call before any rank writes."""
        removed = 0
        for folder in (self.root, self.results_dir, self.root / _AUDIO):
            if folder.is_dir():
                for path in folder.glob(f".*{_TEMPORARY_MARK}*"):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # ----- results ------------------------------------------------------------------
    def result_path(self, identifier: str) -> Path:
        return self.results_dir / f"{utterance_key(identifier)}.safetensors"

    def save_result(self, identifier: str, result: Any) -> Path:
        """Save a SPESResult for ``identifier`` atomically (replacing an unrecorded older file)."""
        return atomic_write(self.result_path(identifier), lambda temporary: result.save(temporary, overwrite=True))

    def load_result(self, identifier: str) -> Any:
        from captum_spes import SPESResult

        return SPESResult.load(self.result_path(identifier))

    def store_audio(self, utterance: Utterance) -> Utterance:
        """The utterance with embedded audio (a dataset's bytes) saved as ``audio/<key><suffix>``
        in the directory, so that the evaluation finds it; others are returned as they are."""
        if utterance.audio_bytes is None:
            return utterance
        data = utterance.audio_bytes
        path = self.root / _AUDIO / f"{utterance_key(utterance.id)}{utterance.audio.suffix or '.wav'}"
        if not (path.is_file() and path.read_bytes() == data):
            atomic_write(path, lambda temporary: temporary.write_bytes(data))
        return dataclasses.replace(utterance, audio=path, audio_bytes=None)

    # ----- records ------------------------------------------------------------------
    def done_record(self, utterance: Utterance, result: Any, path: Path, seconds: float, device: str) -> dict:
        """The record of a saved result."""
        return {
            **self._row(utterance),
            "status": DONE,
            "hypothesis": result.text,
            "n_masks": result.metadata.get("n_masks"),
            "seconds": round(seconds, 3),
            "error": None,
            "result": str(path.relative_to(self.root)),
            "bytes": path.stat().st_size,
            "device": device,
        }

    def failed_record(self, utterance: Utterance, error: BaseException, seconds: float, device: str) -> dict:
        """The record of an utterance that could not be explained."""
        message = " ".join(str(error).split())
        return {
            **self._row(utterance),
            "status": FAILED,
            "hypothesis": None,
            "n_masks": None,
            "seconds": round(seconds, 3),
            "error": f"{type(error).__name__}: {message}" if message else type(error).__name__,
            "result": None,
            "bytes": None,
            "device": device,
        }

    @staticmethod
    def _row(utterance: Utterance) -> dict[str, Any]:
        return {
            "id": utterance.id,
            "key": utterance_key(utterance.id),
            "row": utterance.row,
            "audio": str(utterance.audio),
            "reference": utterance.reference,
            "language": utterance.language,
            "task": utterance.task,
            "alignment": None if utterance.alignment is None else str(utterance.alignment),
        }

    def _is_complete(self, record: Mapping[str, Any]) -> bool:
        if not record.get("result"):
            return False
        path = self.root / record["result"]
        return path.is_file() and path.stat().st_size == record.get("bytes")

    def records(self) -> dict[str, dict[str, Any]]:
        """The current record of every id found in the shards (see :meth:`RecordShards.latest`)."""
        return self.shards.latest(self._is_complete)

    def pending(self, utterances: Iterable[Utterance], *, retry_failed: bool = False) -> list[Utterance]:
        """The utterances still to do: no record (new or interrupted), or failed when ``retry_failed``."""
        records = self.records()
        todo = []
        for utterance in utterances:
            record = records.get(utterance.id)
            if record is None or (retry_failed and record["status"] == FAILED):
                todo.append(utterance)
        return todo

    def write_index(self, order: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Merge the shards into ``index.jsonl`` (ids in ``order`` first, then the rest sorted)."""
        records = self.records()
        ordered = [i for i in dict.fromkeys(order) if i in records]
        ordered += sorted(set(records) - set(ordered))
        merged = [records[i] for i in ordered]
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged)
        atomic_write_text(self.index_path, text)
        return merged

    def read_index(self) -> list[dict[str, Any]]:
        """The merged index written by :meth:`write_index`."""
        if not self.index_path.exists():
            raise FileNotFoundError(
                f"{self.index_path} does not exist: run captum-spes explain-dataset MANIFEST --out {self.root} first"
            )
        return list(_read_records(self.index_path))


def check_unique_keys(identifiers: Iterable[str]) -> None:
    """Raise if two ids map to the same file name (practically impossible; checked anyway)."""
    seen: dict[str, str] = {}
    for identifier in identifiers:
        key = utterance_key(identifier)
        if key in seen and seen[key] != identifier:
            raise InputError(f"ids {seen[key]!r} and {identifier!r} map to the same file name {key}; rename one")
        seen[key] = identifier
