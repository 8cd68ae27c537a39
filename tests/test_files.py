"""Tests of the file-writing policy (``captum_spes._utils.files``) and of the writers using it."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from test_visualization_report import make_result

from captum_spes._utils.files import atomic_write, default_file_mode, refuse_overwrite

UMASKS = [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)]


@pytest.fixture(params=UMASKS, ids=[f"umask{u:03o}" for u, _ in UMASKS])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under a given umask; yields the file mode that umask asks for."""
    mask, mode = request.param
    previous = os.umask(mask)
    try:
        yield mode
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_default_file_mode_follows_umask(umask: int) -> None:
    assert default_file_mode() == umask


def test_atomic_write_gives_the_umask_mode(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "sub" / "notes.txt"  # the folder is created
    with atomic_write(target) as temporary:
        assert temporary.parent == target.parent and temporary.suffix == ".txt"
        temporary.write_text("done")
    assert target.read_text() == "done"
    assert _mode(target) == umask
    assert _leftovers(target.parent, {"notes.txt"}) == []


@pytest.mark.parametrize("interruption", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_write_leaves_no_target(tmp_path: Path, interruption: BaseException) -> None:
    target = tmp_path / "result.safetensors"
    with pytest.raises(type(interruption)):
        with atomic_write(target) as temporary:
            temporary.write_bytes(b"half a file")
            raise interruption
    assert not target.exists()
    assert _leftovers(tmp_path, set()) == []


def test_interrupted_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as temporary:
            temporary.write_text("new, half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path, {"report.html"}) == []


def test_refuse_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    assert refuse_overwrite(target, overwrite=False) == target
    target.write_text("keep")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        refuse_overwrite(target, overwrite=False)
    assert refuse_overwrite(target, overwrite=True) == target


# ----- every writer -------------------------------------------------------------------
def _save_result(path: Path) -> Path:
    return make_result().save(path / "explanation.safetensors")


def _write_report(path: Path) -> Path:
    from captum_spes.visualization import write_html_report

    waveform = (0.3 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000)).astype(np.float32)
    return write_html_report(make_result(), path / "report.html", waveform=waveform, features=torch.randn(1, 80, 150))


def _write_listen_wav(path: Path) -> Path:
    from captum_spes.visualization import write_salient_audio

    waveform = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    return write_salient_audio(make_result(), waveform, 16000, path / "listen" / "word_00.wav", token=0)


def _save_cli_figure(path: Path) -> Path:
    import matplotlib.pyplot as plt

    from captum_spes.cli import save_figure

    fig, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    return save_figure(fig, path / "overview.png")


def _write_comparison(path: Path) -> Path:
    from captum_spes.comparison.cli import _write_report
    from captum_spes.comparison.report import ComparisonReport, MethodResult

    maps = torch.rand(2, 80, 150, generator=torch.Generator().manual_seed(0))
    row = MethodResult(
        method="random",
        forward_passes=1,
        backward_passes=0,
        seconds=0.1,
        attributions=maps,
        utterance_map=maps.amax(0),
        deletion_auc=50.0,
    )
    report = ComparisonReport(rows=[row], text="w1 w2", tokens=[" w1", " w2"], num_frames=150, frame_rate=100.0)
    _write_report(report, path)
    return path / "comparison.csv"


WRITERS: dict[str, Callable[[Path], Path]] = {
    "SPESResult.save": _save_result,
    "write_html_report": _write_report,
    "write_salient_audio": _write_listen_wav,
    "cli.save_figure": _save_cli_figure,
    "compare outputs": _write_comparison,
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_writers_give_the_umask_mode(tmp_path: Path, umask: int, writer: str) -> None:
    written = WRITERS[writer](tmp_path)
    assert written.stat().st_size > 0
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        assert _mode(path) == umask, (path, oct(_mode(path)))
        assert ".partial" not in path.name
