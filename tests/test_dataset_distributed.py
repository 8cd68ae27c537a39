"""Tests of ``captum_spes.dataset.distributed`` and of dataset runs under torchrun.

The torchrun tests start ``python -m torch.distributed.run --standalone --nproc-per-node 2``
(two CPU ranks, gloo) on six bundled clips with a tiny random Whisper saved as a local
folder, and compare with a single-process run of the same command. Both use one torch
thread per process, so the maps must be equal bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from dataset_helpers import CLIPS, clip_rows, write_manifest, write_tiny_whisper

from captum_spes import SPESResult, cli
from captum_spes.dataset.distributed import DistributedContext, configure_threads, initialize, resolve_device, shard
from captum_spes.dataset.store import DatasetStore

OPTIONS = ["--n-masks", "24", "--batch-size", "8", "--threads", "1", "--device", "cpu"]
EVALUATE = ["--step", "25", "--num-beams", "2", "--threads", "1", "--device", "cpu", "--no-progress"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TORCHRUN_TIMEOUT = 240


# ----- unit tests -----------------------------------------------------------------------
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_cover_every_item_once_deterministically(world_size: int) -> None:
    items = list(range(10))
    shards = [shard(items, DistributedContext(rank=r, world_size=world_size)) for r in range(world_size)]
    assert sorted(i for s in shards for i in s) == items
    assert shards[0] == items[::world_size]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_a_process_without_torchrun_is_a_single_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    context = initialize()
    assert (context.rank, context.world_size, context.distributed, context.is_main) == (0, 1, False, True)
    assert context.broadcast("x") == "x" and context.gather(3) == [3]
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' must be an integer"):
        initialize()


def test_main_first_runs_on_one_process_only_when_needed() -> None:
    context = DistributedContext()
    calls: list[int] = []
    assert context.main_first(lambda: calls.append(1) or "model") == "model"
    assert context.main_first(lambda: calls.append(2), needed=False) is None
    assert calls == [1]


def test_devices_and_threads_per_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    context = DistributedContext(rank=1, world_size=2, local_rank=1, local_world_size=2)
    assert resolve_device("cpu", context) == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto", context) == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda", context)
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu", context)
    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(7)))
        assert configure_threads("cpu", context, None) == 3  # 7 cores, 2 ranks on the node
        assert configure_threads("cpu", DistributedContext(local_world_size=8), None) == 1
        assert configure_threads("cpu", context, 2) == 2
        with pytest.raises(ValueError, match="--threads must be a positive integer"):
            configure_threads("cpu", context, 0)
    finally:
        torch.set_num_threads(threads)


# ----- torchrun -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model, a manifest of six clips, and a single-process run of it."""
    root = tmp_path_factory.mktemp("corpus")
    model = write_tiny_whisper(root / "tiny-whisper")
    manifest = write_manifest(root / "clips.csv", clip_rows(CLIPS))
    single = root / "single"
    assert cli.main(["explain-dataset", str(manifest), "--out", str(single), "--model", str(model), *OPTIONS]) == 0
    return {"model": model, "manifest": manifest, "single": single}


def _command(corpus: dict[str, Path], out: Path) -> list[str]:
    return [*TORCHRUN, "-m", "captum_spes", "explain-dataset", str(corpus["manifest"]), "--out", str(out)] + [
        "--model",
        str(corpus["model"]),
        *OPTIONS,
    ]


def _environment() -> dict[str, str]:
    # The subprocesses import this checkout, as the test process does.
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def _torchrun(command: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT, env=_environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (Linux ``/proc``)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (name) state ppid ...": the name may hold spaces, so split after ")".
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _maps(out: Path) -> dict[str, SPESResult]:
    return {r["id"]: SPESResult.load(out / r["result"]) for r in DatasetStore(out).read_index()}


def _assert_same_results(out: Path, single: Path) -> None:
    index = DatasetStore(out).read_index()
    assert [r["id"] for r in index] == list(CLIPS)  # every id exactly once, in manifest order
    assert all(r["status"] == "done" for r in index)
    assert {r["rank"] for r in index} == {0, 1}
    got, expected = _maps(out), _maps(single)
    for identifier in CLIPS:
        assert got[identifier].text == expected[identifier].text
        assert torch.equal(got[identifier].spectrogram_attr, expected[identifier].spectrogram_attr), identifier
        assert torch.equal(got[identifier].token_attr, expected[identifier].token_attr), identifier
        assert got[identifier].metadata["utterance_id"] == identifier


def test_torchrun_shards_the_corpus_and_equals_one_process(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "torchrun"
    done = _torchrun(_command(corpus, out))
    assert "6 of 6 utterances done, 0 failed" in done.stdout
    assert "explaining 6 on 2 rank(s)" in done.stdout
    assert "rank 1 explained" in done.stderr and "all ranks explained" in done.stderr  # the bars
    _assert_same_results(out, corpus["single"])
    shards = sorted(p.name for p in (out / "index").iterdir())
    assert shards == ["rank-0.jsonl", "rank-1.jsonl"]
    per_rank = [len((out / "index" / name).read_text().splitlines()) for name in shards]
    assert per_rank == [3, 3]


def test_a_killed_torchrun_run_resumes_with_nothing_lost_or_duplicated(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "killed"
    store = DatasetStore(out)
    process = subprocess.Popen(
        _command(corpus, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=_environment(),
    )
    deadline = time.monotonic() + TORCHRUN_TIMEOUT
    try:
        while not store.records() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
    finally:
        # torchrun starts each rank in a session of its own: kill the whole tree, at once.
        for pid in _process_tree(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
    finished = set(store.records())
    assert 0 < len(finished) < len(CLIPS), "the run must be killed midway"
    assert not store.index_path.exists()

    done = _torchrun(_command(corpus, out))
    assert f"{len(finished)} already in" in done.stdout
    assert f"this run: {len(CLIPS) - len(finished)} explained" in done.stdout
    _assert_same_results(out, corpus["single"])
    records = [json.loads(line) for path in store.shards.paths() for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in records if r.get("status") == "done") == sorted(CLIPS)  # no utterance twice
    assert not list((out / "results").glob(".*"))  # no temporary file left


def test_torchrun_evaluation_equals_one_process(corpus: dict[str, Path], tmp_path: Path) -> None:
    single = tmp_path / "single-evaluation"
    assert cli.main(["evaluate", str(corpus["single"]), "--eval-dir", str(single), *EVALUATE]) == 0
    distributed = tmp_path / "torchrun-evaluation"
    command = [*TORCHRUN, "-m", "captum_spes", "evaluate", str(corpus["single"]), "--eval-dir", str(distributed)]
    _torchrun([*command, *EVALUATE])
    expected = json.loads((single / "evaluation.json").read_text())
    got = json.loads((distributed / "evaluation.json").read_text())
    expected["settings"].pop("folder"), got["settings"].pop("folder")
    assert got == expected
    assert (distributed / "summary.md").read_text() == (single / "summary.md").read_text()
    ranks = {json.loads(line)["rank"] for p in (distributed / "index").iterdir() for line in p.read_text().splitlines()}
    assert ranks == {0, 1}


def test_a_missing_and_a_corrupt_file_under_torchrun_are_marked_failed(corpus: dict[str, Path], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00not really a wave file")
    rows = [
        *clip_rows(CLIPS[:2]),
        {"id": "missing", "audio": str(tmp_path / "nowhere.wav")},
        {"id": "corrupt", "audio": str(corrupt)},
    ]
    manifest = write_manifest(tmp_path / "bad.csv", rows)
    out = tmp_path / "bad-run"
    command = [*TORCHRUN, "-m", "captum_spes", "explain-dataset", str(manifest), "--out", str(out)]
    done = subprocess.run(
        [*command, "--model", str(corpus["model"]), *OPTIONS, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=TORCHRUN_TIMEOUT,
        env=_environment(),
    )
    # Rank 0 exits with status 3 (some failed); torchrun reports a failed rank as 1.
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 of 4 utterances done, 2 failed" in done.stdout
    index = DatasetStore(out).read_index()
    assert [r["id"] for r in index] == [r["id"] for r in rows]  # every id once, failures included
    statuses = {r["id"]: (r["status"], r["rank"]) for r in index}
    # Round-robin over the pending rows: ranks 0, 1, 0, 1.
    assert statuses == {
        CLIPS[0]: ("done", 0),
        CLIPS[1]: ("done", 1),
        "missing": ("failed", 0),
        "corrupt": ("failed", 1),
    }
    errors = {r["id"]: r["error"] for r in index}
    assert "audio file not found" in errors["missing"] and "could not decode" in errors["corrupt"]
