"""Tests of ``captum_spes.dataset.manifest``: CSV / TSV / JSON Lines manifests and HF datasets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from dataset_helpers import write_manifest
from helpers import require

from captum_spes.dataset.manifest import ManifestError, Utterance, read_hf_dataset, read_manifest


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A folder with two (empty) audio files and a TextGrid, referenced by relative paths."""
    (tmp_path / "audio").mkdir()
    for name in ("a.wav", "b.flac"):
        (tmp_path / "audio" / name).write_bytes(b"")
    (tmp_path / "a.TextGrid").write_text("")
    return tmp_path


ROWS = [
    {"id": "utt-a", "audio": "audio/a.wav", "reference": "hello world", "language": "en", "task": "transcribe"},
    {"id": "utt-b", "audio": "audio/b.flac", "reference": "", "language": "", "task": ""},
]


def test_csv_reads_every_field_and_resolves_paths_against_the_manifest(corpus: Path) -> None:
    rows = [{**ROWS[0], "alignment": "a.TextGrid"}, {**ROWS[1], "alignment": ""}]
    utterances = read_manifest(write_manifest(corpus / "test.csv", rows))
    assert [u.id for u in utterances] == ["utt-a", "utt-b"]
    first, second = utterances
    assert first.audio == (corpus / "audio" / "a.wav").resolve()
    assert first.alignment == (corpus / "a.TextGrid").resolve()
    assert (first.reference, first.language, first.task) == ("hello world", "en", "transcribe")
    assert (second.reference, second.language, second.task, second.alignment) == (None, None, None, None)
    assert first.row == "test.csv line 2" and second.row == "test.csv line 3"


def test_tsv_and_json_lines_give_the_same_utterances_as_csv(corpus: Path) -> None:
    expected = read_manifest(write_manifest(corpus / "test.csv", ROWS))
    tsv = corpus / "test.tsv"
    tsv.write_text("\t".join(ROWS[0]) + "\n" + "".join("\t".join(r.values()) + "\n" for r in ROWS))
    jsonl = corpus / "test.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert _without_rows(read_manifest(tsv)) == _without_rows(expected)
    assert _without_rows(read_manifest(jsonl)) == _without_rows(expected)
    assert read_manifest(jsonl)[1].row == "test.jsonl line 2"


def _without_rows(utterances: list[Utterance]) -> list[Utterance]:
    return [dataclasses.replace(u, row="") for u in utterances]


def test_column_mapping_reads_fields_from_other_columns(corpus: Path) -> None:
    path = write_manifest(corpus / "m.csv", [{"name": "x", "file": "audio/a.wav", "text": "hi"}])
    [utterance] = read_manifest(path, columns={"id": "name", "audio": "file", "reference": "text"})
    assert (utterance.id, utterance.reference) == ("x", "hi")
    with pytest.raises(ManifestError, match="unknown field 'transcript'"):
        read_manifest(path, columns={"transcript": "text"})


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "a"}], r"m\.csv line 1: no 'audio' column"),
        ([{"audio": "audio/a.wav"}], r"m\.csv line 1: no 'id' column"),
        ([{"id": "a", "audio": "audio/a.wav", "referense": "x"}], r"line 1: unknown column 'referense'"),
        (
            [{"id": "a", "audio": "audio/a.wav"}, {"id": "a", "audio": "audio/b.flac"}],
            r"line 3: duplicate id 'a' \(first at m\.csv line 2\)",
        ),
        (
            [{"id": "a", "audio": "audio/a.wav"}, {"id": "b", "audio": ""}],
            r"m\.csv line 3 \(id 'b'\): the 'audio' value is empty",
        ),
        ([{"id": "", "audio": "audio/a.wav"}], r"m\.csv line 2: the 'id' value is empty"),
        ([{"id": "a", "audio": "audio/a.wav", "task": "summarise"}], r"line 2 \(id 'a'\): task must be one of"),
        (
            [{"id": "a", "audio": "audio/a.wav", "alignment": "missing.TextGrid"}],
            r"line 2 \(id 'a'\): alignment file .*missing\.TextGrid does not exist",
        ),
    ],
)
def test_structural_errors_name_the_row(corpus: Path, rows: list[dict[str, str]], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        read_manifest(write_manifest(corpus / "m.csv", rows))


def test_a_missing_audio_file_is_not_a_manifest_error(corpus: Path) -> None:
    # A missing file is a per-utterance failure, recorded by the runner: the run goes on.
    [utterance] = read_manifest(write_manifest(corpus / "m.csv", [{"id": "a", "audio": "nowhere.wav"}]))
    assert utterance.audio == (corpus / "nowhere.wav").resolve() and not utterance.audio.exists()


def test_csv_rows_with_a_wrong_number_of_values_and_bad_json_lines_name_the_line(corpus: Path) -> None:
    path = corpus / "m.csv"
    path.write_text("id,audio\na,audio/a.wav\nb,audio/b.flac,extra\n")
    with pytest.raises(ManifestError, match=r"m\.csv line 3: 3 values for 2 columns"):
        read_manifest(path)
    lines = corpus / "m.jsonl"
    lines.write_text('{"id": "a", "audio": "audio/a.wav"}\n\n{"id": "b", "audio": \n')
    with pytest.raises(ManifestError, match=r"m\.jsonl line 3: not valid JSON"):
        read_manifest(lines)
    lines.write_text('{"id": "a", "audio": ["audio/a.wav"]}\n')
    with pytest.raises(ManifestError, match=r"line 1: audio must be text, got list"):
        read_manifest(lines)


def test_empty_manifests_unknown_formats_and_missing_files_are_refused(corpus: Path) -> None:
    (corpus / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="is empty"):
        read_manifest(corpus / "empty.csv")
    (corpus / "header.csv").write_text("id,audio\n")
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(corpus / "header.csv")
    (corpus / "m.xlsx").write_text("")
    with pytest.raises(ManifestError, match="unknown format '.xlsx'"):
        read_manifest(corpus / "m.xlsx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_manifest(corpus / "nowhere.csv")


def test_hugging_face_dataset_from_local_files(corpus: Path) -> None:
    datasets = require("datasets")
    audio = [str(corpus / "audio" / "a.wav"), str(corpus / "audio" / "b.flac")]
    table = datasets.Dataset.from_dict({"id": ["a", "b"], "audio": audio, "text": ["hi", "ho"], "speaker": [1, 2]})
    table = table.cast_column("audio", datasets.Audio())
    utterances = read_hf_dataset(table, columns={"reference": "text"})  # "speaker" is ignored
    assert [(u.id, u.audio, u.reference, u.row) for u in utterances] == [
        ("a", Path(audio[0]), "hi", "dataset row 1"),
        ("b", Path(audio[1]), "ho", "dataset row 2"),
    ]
    table.save_to_disk(str(corpus / "saved"))
    assert [u.id for u in read_manifest(corpus / "saved", columns={"reference": "text"})] == ["a", "b"]
    with pytest.raises(ManifestError, match="not an Audio feature"):
        read_hf_dataset(datasets.Dataset.from_dict({"id": ["a"], "audio": audio[:1]}))
    duplicated = datasets.Dataset.from_dict({"id": ["a", "a"], "audio": audio}).cast_column("audio", datasets.Audio())
    with pytest.raises(ManifestError, match=r"dataset row 2: duplicate id 'a'"):
        read_hf_dataset(duplicated)
