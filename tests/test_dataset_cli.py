"""Tests of ``captum-spes explain-dataset`` and ``captum-spes evaluate`` on one process.

The model is a tiny random Whisper saved as a local folder (``dataset_helpers``), the
clips are bundled ones; the torchrun runs are in ``test_dataset_distributed.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from dataset_helpers import CLIPS, clip_rows, write_manifest, write_tiny_whisper
from helpers import require

from captum_spes import SPESResult, cli
from captum_spes.dataset.cli import EXIT_SOME_FAILED
from captum_spes.dataset.store import DatasetStore

N_MASKS = "16"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_whisper(tmp_path_factory.mktemp("model") / "tiny-whisper")


def _explain(manifest: Path, out: Path, model: Path, *extra: str) -> int:
    return cli.main(
        ["explain-dataset", str(manifest), "--out", str(out), "--model", str(model), "--n-masks", N_MASKS]
        + ["--threads", "1", "--no-progress", "--device", "cpu", *extra]
    )


def _explained(tmp_path: Path, model: Path, count: int) -> tuple[Path, Path]:
    """``(manifest, out)`` of a finished run on the first ``count`` clips."""
    manifest = write_manifest(tmp_path / "m.csv", clip_rows(CLIPS[:count]))
    out = tmp_path / "run"
    assert _explain(manifest, out, model) == 0
    return manifest, out


def _index(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in DatasetStore(out).read_index()}


def test_bad_utterances_are_recorded_as_failed_and_the_run_goes_on(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00not really a wave file")
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, 0.1 * np.sin(np.arange(16000 * 31) / 10.0), 16000)
    good = clip_rows(CLIPS[:2])
    good[1]["id"] = "speaker 1/utt:1"  # not a file name
    rows = [
        good[0],
        {"id": "missing", "audio": str(tmp_path / "nowhere.wav")},
        {"id": "corrupt", "audio": str(corrupt)},
        {"id": "too-long", "audio": str(long_clip)},
        good[1],
    ]
    manifest = write_manifest(tmp_path / "test.csv", rows)
    out = tmp_path / "run"
    assert _explain(manifest, out, tiny_model) == EXIT_SOME_FAILED
    printed = capsys.readouterr().out
    assert "2 of 5 utterances done, 3 failed" in printed
    assert "failed: missing: test.csv line 3: AudioError: audio file not found" in printed

    index = _index(out)
    assert list(index) == [r["id"] for r in rows]
    assert {i: r["status"] for i, r in index.items()} == {
        CLIPS[0]: "done",
        "missing": "failed",
        "corrupt": "failed",
        "too-long": "failed",
        "speaker 1/utt:1": "done",
    }
    assert "test.csv line 3" == index["missing"]["row"]
    assert "could not decode" in index["corrupt"]["error"]
    assert "31.0 s long" in index["too-long"]["error"]
    for identifier in (CLIPS[0], "speaker 1/utt:1"):
        record = index[identifier]
        result = SPESResult.load(out / record["result"])
        assert result.metadata["utterance_id"] == identifier
        assert record["hypothesis"] == result.text and record["n_masks"] == int(N_MASKS)
        assert record["seconds"] > 0 and record["rank"] == 0 and record["error"] is None
    assert sorted(p.name for p in (out / "results").iterdir()) == sorted(
        Path(index[i]["result"]).name for i in (CLIPS[0], "speaker 1/utt:1")
    )

    # A rerun keeps the failures (exit 3 again) and redoes nothing ...
    assert _explain(manifest, out, tiny_model) == EXIT_SOME_FAILED
    assert "this run: 0 explained, 0 failed" in capsys.readouterr().out
    # ... unless asked to retry them.
    corrupt.unlink()
    sf.write(corrupt, 0.1 * np.sin(np.arange(16000) / 7.0), 16000)
    assert _explain(manifest, out, tiny_model, "--retry-failed") == EXIT_SOME_FAILED
    assert "this run: 1 explained, 2 failed" in capsys.readouterr().out
    assert _index(out)["corrupt"]["status"] == "done"


def test_a_rerun_skips_what_is_done_and_redoes_what_was_interrupted(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, out = _explained(tmp_path, tiny_model, 3)
    store = DatasetStore(out)
    before = {i: SPESResult.load(out / r["result"]).spectrogram_attr.clone() for i, r in _index(out).items()}
    # Simulate a kill while CLIPS[1] was written: its record is gone and its file is half there.
    shard = store.shards.path(0)
    lines = [line for line in shard.read_text().splitlines() if json.loads(line)["id"] != CLIPS[1]]
    shard.write_text("\n".join(lines) + "\n")
    half = store.result_path(CLIPS[1])
    head = half.read_bytes()[:100]
    half.unlink()  # a new file: the loaded results map the old one
    half.write_bytes(head)
    capsys.readouterr()

    assert _explain(manifest, out, tiny_model) == 0
    printed = capsys.readouterr().out
    assert "3 utterances, 2 already in" in printed and "this run: 1 explained, 0 failed" in printed
    after = _index(out)
    assert list(after) == list(CLIPS[:3])
    redone = SPESResult.load(out / after[CLIPS[1]]["result"])
    assert redone.spectrogram_attr.equal(before[CLIPS[1]])  # the same seed: the same map
    records = [json.loads(line) for line in shard.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(CLIPS[:3])  # nothing done twice


def test_other_settings_are_refused_unless_mixing_is_asked_for(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, out = _explained(tmp_path, tiny_model, 1)
    capsys.readouterr()
    assert _explain(manifest, out, tiny_model, "--seed", "3", "--token-p", "none") == 1
    error = capsys.readouterr().err
    assert error.startswith("captum-spes: error:") and "seed: 0 -> 3; token_p: 0.5 -> None" in error
    assert "--mix-settings" in error
    more = write_manifest(tmp_path / "more.csv", clip_rows(CLIPS[:2]))
    assert _explain(more, out, tiny_model, "--seed", "3", "--mix-settings") == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["seed"] == 3 and settings["previous"][0]["seed"] == 0
    assert SPESResult.load(out / _index(out)[CLIPS[1]]["result"]).metadata["seed"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n-masks", "0"], "--n-masks must be an integer >= 1"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
        (["--column", "speaker=spk"], "unknown field 'speaker'"),
        (["--estimator", "median"], "--estimator 'median' is not a registered estimator"),
        (["--estimator", "coarse_to_fine", "--n-masks", "auto"], "takes a fixed budget: pass --n-masks <int>"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_work(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", clip_rows(CLIPS[:1]))
    assert _explain(manifest, tmp_path / "run", tiny_model, *extra) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_evaluate_prints_and_writes_the_corpus_table(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = _explained(tmp_path, tiny_model, 2)
    capsys.readouterr()
    arguments = ["evaluate", str(out), "--step", "25", "--num-beams", "2", "--threads", "1", "--no-progress"]
    assert cli.main(arguments) == 0
    printed = capsys.readouterr().out
    for measure in ("deletion AUC (wer_max", "insertion AUC raw", "size AUC, spectrogram", "pointing game accuracy"):
        assert measure in printed
    folder = out / "evaluation"
    names = {"summary.csv", "summary.md", "curves.csv", "curves.png", "evaluation.json", "settings.json", "index"}
    assert names <= {p.name for p in folder.iterdir()}
    evaluation = json.loads((folder / "evaluation.json").read_text())
    assert evaluation["num_utterances"] == 2 and evaluation["curves"]["deletion"]["levels"] == [0, 25, 50, 75, 100]
    assert (folder / "summary.md").read_text().startswith("| measure | value | better |")
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # Another metric reuses the decoded texts; other decoding settings are refused.
    assert cli.main([*arguments, "--metric", "bleu"]) == 0
    assert "deletion AUC (bleu" in capsys.readouterr().out
    assert cli.main([*arguments[:-3], "--num-beams", "1", "--no-progress"]) == 1
    assert "num_beams: 2 -> 1" in capsys.readouterr().err


def test_a_saved_hugging_face_dataset_is_explained_and_evaluated(tmp_path: Path, tiny_model: Path) -> None:
    datasets = require("datasets")
    rows = clip_rows(CLIPS[:2])
    table = datasets.Dataset.from_dict(
        {"id": [r["id"] for r in rows], "audio": [r["audio"] for r in rows], "text": [r["reference"] for r in rows]}
    ).cast_column("audio", datasets.Audio())
    table.save_to_disk(str(tmp_path / "saved"))  # embeds the audio bytes
    out = tmp_path / "run"
    assert _explain(tmp_path / "saved", out, tiny_model, "--column", "reference=text") == 0
    index = _index(out)
    for row in rows:
        record = index[row["id"]]
        assert record["status"] == "done" and record["reference"] == row["reference"]
        assert Path(record["audio"]).parent == out / "audio"  # the embedded audio, stored for evaluate
        assert Path(record["audio"]).read_bytes() == Path(row["audio"]).read_bytes()
    evaluate = ["evaluate", str(out), "--step", "50", "--num-beams", "1", "--against", "reference", "--no-progress"]
    assert cli.main(evaluate) == 0
