"""Tests of ``captum_spes.dataset.store``: file names, atomic writes, records, settings, lock."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from captum_spes import SPESResult
from captum_spes.dataset.manifest import Utterance
from captum_spes.dataset.store import (
    DONE,
    FAILED,
    DatasetStore,
    DirectoryInUseError,
    SettingsMismatchError,
    atomic_write,
    atomic_write_text,
    check_unique_keys,
    utterance_key,
)


def _result(text: str = "hi") -> SPESResult:
    return SPESResult(
        spectrogram_attr=torch.rand(2, 3, 4),
        token_attr=None,
        target_ids=[1, 2],
        tokens=[" hi", "<eos>"],
        decoder_input_ids=[0, 1],
        decoder_input_tokens=["<s>", " hi"],
        num_prompt=1,
        target_log_probs=torch.zeros(2),
        text=text,
        metadata={"n_masks": 8},
    )


def _utterance(identifier: str) -> Utterance:
    return Utterance(id=identifier, audio=Path(f"/audio/{identifier}.wav"), row=f"m.csv line {identifier}")


def _done(store: DatasetStore, identifier: str, rank: int = 0) -> dict:
    path = store.save_result(identifier, _result())
    return store.shards.append(rank, store.done_record(_utterance(identifier), _result(), path, 1.0, "cpu"))


def test_keys_are_safe_distinct_and_stable() -> None:
    ids = ["a/b", "a b", "A/b", "a_b", "../../etc/passwd", "ünï cødé", "", "x" * 300, ".hidden"]
    keys = [utterance_key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    assert len({k.lower() for k in keys}) == len(ids)  # case-insensitive file systems too
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", key) and not key.startswith(".") and len(key) <= 77
    assert utterance_key("a/b") == utterance_key("a/b") and utterance_key("a/b").startswith("a_b-")
    check_unique_keys(ids)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "settings.json", "old")

    def broken(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]  # no temporary left


def test_a_result_counts_as_done_only_with_its_record_and_its_complete_file(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    _done(store, "a")
    store.save_result("b", _result())  # killed between the file and its record
    record_c = _done(store, "c")
    store.result_path("c").write_bytes(store.result_path("c").read_bytes()[:-10])  # truncated afterwards
    _done(store, "d")
    store.result_path("d").unlink()  # removed afterwards
    assert set(store.records()) == {"a"}
    assert record_c["bytes"] > 10
    pending = store.pending([_utterance(i) for i in "abcde"])
    assert [u.id for u in pending] == ["b", "c", "d", "e"]
    assert store.load_result("a").text == "hi"


def test_torn_lines_are_skipped_and_the_next_record_starts_on_a_new_line(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    _done(store, "a")
    with open(store.shards.path(0), "a") as handle:
        handle.write('{"id": "b", "status": "do')  # a crash mid-write
    _done(store, "c")
    assert set(store.records()) == {"a", "c"}
    lines = store.shards.path(0).read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["id"] == "c"


def test_done_beats_failed_and_failures_are_retried_only_when_asked(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    store.shards.append(0, store.failed_record(_utterance("a"), ValueError("bad\naudio"), 0.5, "cpu"))
    _done(store, "a", rank=1)
    store.shards.append(0, store.failed_record(_utterance("a"), ValueError("later"), 0.5, "cpu"))
    store.shards.append(1, store.failed_record(_utterance("b"), ValueError("first"), 0.5, "cpu"))
    store.shards.append(0, store.failed_record(_utterance("b"), RuntimeError("second"), 0.5, "cpu"))
    records = store.records()
    assert records["a"]["status"] == DONE and records["a"]["rank"] == 1
    _done(store, "a", rank=2)  # explained again later: the latest done record is the one
    records = store.records()
    assert records["a"]["rank"] == 2
    assert records["b"]["status"] == FAILED and records["b"]["error"] == "RuntimeError: second"
    utterances = [_utterance("a"), _utterance("b")]
    assert store.pending(utterances) == []
    assert [u.id for u in store.pending(utterances, retry_failed=True)] == ["b"]


def test_index_merges_every_shard_once_in_manifest_order(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    for rank, identifier in [(1, "z"), (0, "b"), (1, "a"), (0, "orphan")]:
        _done(store, identifier, rank)
    store.shards.append(1, store.failed_record(_utterance("a"), ValueError("x"), 0.1, "cpu"))
    merged = store.write_index(order=["a", "b", "z"])
    assert [r["id"] for r in merged] == ["a", "b", "z", "orphan"]
    assert [r["id"] for r in store.read_index()] == ["a", "b", "z", "orphan"]
    assert store.read_index()[0]["status"] == DONE and store.read_index()[0]["row"] == "m.csv line a"


def test_settings_are_stored_then_checked_naming_every_difference(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    settings = {"model": "tiny.en", "n_masks": 100, "seed": 0}
    store.check_settings(settings)
    store.check_settings(dict(settings))  # same settings: fine
    changed = {**settings, "n_masks": 200, "seed": 1}
    with pytest.raises(SettingsMismatchError, match=r"n_masks: 100 -> 200; seed: 0 -> 1.*--mix-settings"):
        store.check_settings(changed)
    store.check_settings(changed, mix=True)
    stored = store.read_settings()
    assert stored["n_masks"] == 200 and stored["previous"] == [settings]
    store.check_settings(changed)  # the new settings are now the directory's


def test_a_second_run_into_the_same_directory_is_refused(tmp_path: Path) -> None:
    first, second = DatasetStore(tmp_path), DatasetStore(tmp_path)
    first.lock()
    with pytest.raises(DirectoryInUseError, match="another captum-spes run"):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()


def test_temporary_files_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    _done(store, "a")
    leftovers = [
        # The names captum_spes._utils.files.atomic_write gives (SPESResult.save nests one).
        store.results_dir / ".b-123.safetensors.k3j9.partial.safetensors",
        store.results_dir / "..b-123.safetensors.k3j9.partial.safetensors.x8q1.partial.safetensors",
        tmp_path / ".index.jsonl.p0x2.partial.jsonl",
    ]
    for path in leftovers:
        path.write_bytes(b"half")
    assert store.remove_temporary_files() == 3
    assert [p.name for p in store.results_dir.iterdir()] == [store.result_path("a").name]
    assert set(store.records()) == {"a"}


def test_embedded_audio_is_stored_in_the_directory(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    utterance = Utterance(id="x/1", audio=Path("clip.flac"), audio_bytes=b"fLaC...")
    stored = store.store_audio(utterance)
    assert stored.audio_bytes is None and stored.audio.read_bytes() == b"fLaC..."
    assert stored.audio == tmp_path / "audio" / f"{utterance_key('x/1')}.flac"
    assert store.store_audio(stored) is stored
