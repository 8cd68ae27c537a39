"""Every bad input a user can give captum-spes, in one table, with what it gets.

Two tables: the command line (``explain``, ``demo``, ``compare``, ``info``) and the Python API
(:func:`~captum_spes.audio.load_audio`, ``SPES(...).attribute``, ``SpeechSeq2SeqWrapper``,
:func:`~captum_spes.models.load_model`, the listenable explanation). A row names the input and
either the error (exit status, or exception type, and a fragment of the message) or, for an
input that is handled, what was done (a fragment of the output). The CLI rows use the tiny
random Whisper of ``test_cli`` (registered in ``MODEL_FACTORIES``), so the table is fast.

Decisions the rows encode:

* stereo, 8-bit and 48 kHz files are handled (mixed down, read, resampled) and the CLI says
  so on its ``Audio:`` line; MP3 is read where libsndfile >= 1.1 is installed (the case here);
* silent audio is refused: every mask of a silent clip changes nothing, and Whisper invents
  words for silence, so the map would explain a hallucination from zeros;
* clips shorter than one 25 ms analysis window (400 samples at 16 kHz, what the listenable
  explanation's STFT needs) or longer than Whisper's 30 s window are refused by the CLI, but
  :func:`load_audio` loads them (the model layer decides);
* errors are one line with exit status 1; argparse's own errors keep its status 2.

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import tiny_whisper, whisper_features
from test_cli import TINY, tiny_factory

from captum_spes import SPES, AdaptiveMasks, InputError, SpeechSeq2SeqWrapper, cli
from captum_spes.audio import AudioError, load_audio, read_audio
from captum_spes.data import load_sample

CUDA = torch.cuda.is_available()
RATE = 16000


# ----- the files ------------------------------------------------------------------------
def _noise(seconds: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    samples = np.random.default_rng(0).standard_normal((round(seconds * rate), channels)) * 0.1
    return samples[:, 0].astype(np.float32) if channels == 1 else samples.astype(np.float32)


def _write(path: Path, data: np.ndarray, rate: int = RATE, **kwargs: Any) -> Path:
    sf.write(str(path), data, rate, **kwargs)
    return path


def _with_nan(path: Path) -> Path:
    data = _noise(1.0)
    data[100] = np.nan
    return _write(path, data, subtype="FLOAT")


def _bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


FILES: dict[str, Callable[[Path], Path]] = {
    "missing": lambda folder: folder / "missing.wav",
    "directory": lambda folder: _folder(folder / "a-folder.wav"),
    "zero-bytes": lambda folder: _bytes(folder / "zero.wav", b""),
    "no-samples": lambda folder: _write(folder / "empty.wav", np.zeros(0, np.float32)),
    "garbage": lambda folder: _bytes(folder / "garbage.wav", np.random.default_rng(1).bytes(4096)),
    "silent": lambda folder: _write(folder / "silent.wav", np.zeros(RATE, np.float32)),
    "nan": lambda folder: _with_nan(folder / "nan.wav"),
    "short": lambda folder: _write(folder / "short.wav", _noise(100 / RATE)),
    "long": lambda folder: _write(folder / "long.wav", _noise(31.0)),
    "stereo": lambda folder: _write(folder / "stereo.wav", _noise(1.0, channels=2)),
    "8-bit": lambda folder: _write(folder / "u8.wav", _noise(1.0), subtype="PCM_U8"),
    "48kHz": lambda folder: _write(folder / "48k.wav", _noise(1.0, rate=48000), rate=48000),
    "mp3": lambda folder: _write(folder / "clip.mp3", _noise(1.0), format="MP3"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-files")
    return {kind: make(folder) for kind, make in FILES.items()}


# ----- the command line -----------------------------------------------------------------
@dataclass(frozen=True)
class CLICase:
    """``argv`` (``{file:KIND}``, ``{out}``, ``{clip}``, ``{textgrid}`` are filled in), the exit
    status and a fragment of stderr (errors) or stdout (status 0)."""

    argv: tuple[str, ...]
    code: int
    fragment: str


_RUN = ("--model", TINY, "--n-masks", "3", "--batch-size", "3", "--out", "{out}")
_COMPARE = (
    "--model", TINY, "--methods", "spes,random", "--n-masks", "3", "--metrics", "size",
    "--slic-segments", "20,25,30", "--out", "{out}",
)  # fmt: skip


def explain(audio: str, *options: str, code: int, fragment: str) -> CLICase:
    return CLICase(("explain", audio, *_RUN, *options), code, fragment)


def demo(*options: str, code: int, fragment: str) -> CLICase:
    return CLICase(("demo", *_RUN, *options), code, fragment)


def compare(audio: str, *options: str, code: int, fragment: str) -> CLICase:
    return CLICase(("compare", audio, *_COMPARE, *options), code, fragment)


_FILE_ERRORS = {
    "missing": "audio file not found",
    "directory": "is a directory; pass the path of an audio file",
    "zero-bytes": "could not decode audio file",
    "no-samples": "contains no samples (0 frames)",
    "garbage": "could not decode audio file",
    "silent": "is silent (peak amplitude 0.00e+00 < 1e-04 full scale), so there is nothing to explain",
    "nan": "contains 1 non-finite samples (NaN or inf)",
    "short": "is 6.2 ms long (100 samples at 16000 Hz), shorter than one 25 ms analysis window; pass at least 25 ms",
    "long": "is 31.0 s long, but Whisper's window is 30 s; trim or split the audio",
}
_FILE_HANDLED = {
    "stereo": "(1.00 s; WAV PCM_16, 2 channels at 16000 Hz): mixed 2 channels down to mono",
    "8-bit": "(1.00 s; WAV PCM_U8, mono at 16000 Hz)",
    "48kHz": "(1.00 s; WAV PCM_16, mono at 48000 Hz): resampled 48000 Hz to 16000 Hz",
    "mp3": "MP3 MPEG_LAYER_III, mono at 16000 Hz",
}
_CUDA_ROW = (
    dict(code=0, fragment="Loading model test-tiny-random-whisper on cuda")
    if CUDA
    else dict(code=1, fragment="--device cuda was requested but CUDA is not available here; use --device cpu")
)

CLI_CASES: dict[str, CLICase] = {
    **{f"explain/file/{kind}": explain(f"{{file:{kind}}}", code=1, fragment=m) for kind, m in _FILE_ERRORS.items()},
    **{f"explain/file/{kind}": explain(f"{{file:{kind}}}", code=0, fragment=m) for kind, m in _FILE_HANDLED.items()},
    **{f"compare/file/{kind}": compare(f"{{file:{kind}}}", code=1, fragment=m) for kind, m in _FILE_ERRORS.items()},
    "compare/file/stereo": compare("{file:stereo}", code=0, fragment=_FILE_HANDLED["stereo"]),
    "explain/option/n-masks=0": explain(
        "{clip}", "--n-masks", "0", code=1, fragment="--n-masks must be a positive integer, got 0"
    ),
    "explain/option/n-masks=-5": explain(
        "{clip}", "--n-masks", "-5", code=1, fragment="--n-masks must be a positive integer, got -5"
    ),
    "explain/option/n-masks=many": explain(
        "{clip}", "--n-masks", "many", code=2, fragment="must be a positive integer or 'auto', got 'many'"
    ),
    "explain/option/n-masks=1.5": explain(
        "{clip}", "--n-masks", "1.5", code=2, fragment="must be a positive integer or 'auto', got '1.5'"
    ),
    "explain/option/batch-size=0": explain(
        "{clip}", "--batch-size", "0", code=1, fragment="--batch-size must be a positive integer, got 0"
    ),
    "explain/option/batch-size=x": explain(
        "{clip}", "--batch-size", "x", code=2, fragment="argument --batch-size: invalid int value: 'x'"
    ),
    "explain/option/seed=-1": explain(
        "{clip}", "--seed", "-1", code=1, fragment="--seed must be a non-negative integer, got -1"
    ),
    "explain/option/seed=x": explain("{clip}", "--seed", "x", code=2, fragment="argument --seed: invalid int value"),
    "explain/option/estimator=median": explain(
        "{clip}", "--estimator", "median", code=1, fragment="--estimator 'median' is not a registered estimator"
    ),
    "explain/option/significance=2": explain(
        "{clip}", "--significance", "2", code=2, fragment="must be a level in (0, 1) such as 0.05, or 'none'"
    ),
    "explain/option/device=cuda": explain("{clip}", "--device", "cuda", **_CUDA_ROW),
    "explain/option/device=tpu": explain(
        "{clip}", "--device", "tpu", code=2, fragment="argument --device: invalid choice: 'tpu'"
    ),
    "explain/option/model=unknown": explain(
        "{clip}", "--model", "no-such-model", code=1, fragment="unknown model 'no-such-model': use an embedded model"
    ),
    "explain/option/model=missing-folder": explain(
        "{clip}", "--model", "./no-such-folder", code=1, fragment="'./no-such-folder' is not a model folder"
    ),
    "explain/option/autocast=fp8": explain(
        "{clip}", "--autocast", "fp8", code=2, fragment="argument --autocast: invalid choice: 'fp8'"
    ),
    "explain/option/task=foo": explain(
        "{clip}", "--task", "foo", code=2, fragment="argument --task: invalid choice: 'foo'"
    ),
    "explain/option/language=sv-on-english-only": explain(
        "{clip}", "--language", "sv", code=1, fragment="not compatible with the `language` argument"
    ),
    "explain/option/target=empty": explain("{clip}", "--target", "", code=1, fragment="the hypothesis is empty"),
    "explain/option/out=a-file": explain(
        "{clip}", "--out", "{file:8-bit}", code=1, fragment="exists and is not a directory"
    ),
    "explain/option/unknown": explain("{clip}", "--nope", code=2, fragment="unrecognized arguments: --nope"),
    "explain/option/no-audio": CLICase(("explain",), 2, "the following arguments are required: AUDIO"),
    "demo/option/sample=unknown": demo("--sample", "nope", code=1, fragment="unknown --sample 'nope'; choose one of"),
    "demo/option/n-masks=0": demo("--n-masks", "0", code=1, fragment="--n-masks must be a positive integer, got 0"),
    "demo/option/batch-size=0": demo(
        "--batch-size", "0", code=1, fragment="--batch-size must be a positive integer, got 0"
    ),
    "demo/option/device=cuda": demo("--device", "cuda", **_CUDA_ROW),
    "demo/option/model=unknown": demo("--model", "no-such-model", code=1, fragment="unknown model 'no-such-model'"),
    "demo/option/autocast=float32": demo(
        "--autocast", "float32", code=2, fragment="argument --autocast: invalid choice: 'float32'"
    ),
    "demo/option/positional": demo("extra", code=2, fragment="unrecognized arguments: extra"),
    "compare/option/n-masks=0": compare(
        "{clip}", "--n-masks", "0", code=2, fragment="argument --n-masks: expected a positive integer, got '0'"
    ),
    "compare/option/batch-size=0": compare(
        "{clip}", "--batch-size", "0", code=2, fragment="argument --batch-size: expected a positive integer"
    ),
    "compare/option/seed=-1": compare(
        "{clip}", "--seed", "-1", code=2, fragment="argument --seed: expected a non-negative integer, got '-1'"
    ),
    "compare/option/step=0": compare(
        "{clip}", "--step", "0", code=2, fragment="must be a percentage in (0, 100] that divides 100, e.g. 10"
    ),
    "compare/option/step=30": compare("{clip}", "--step", "30", code=2, fragment="that divides 100, e.g. 10; got '30'"),
    "compare/option/step=x": compare("{clip}", "--step", "x", code=2, fragment="expected a percentage, got 'x'"),
    "compare/option/ig-steps=0": compare(
        "{clip}", "--ig-steps", "0", code=2, fragment="argument --ig-steps: expected a positive integer"
    ),
    "compare/option/methods=lime": compare(
        "{clip}", "--methods", "spes,lime", code=2, fragment="unknown method ['lime']; choose from"
    ),
    "compare/option/metrics=nope": compare(
        "{clip}", "--metrics", "nope", code=2, fragment="unknown metric ['nope']; choose from"
    ),
    "compare/option/slic-segments=0": compare(
        "{clip}", "--slic-segments", "0,1", code=2, fragment="argument --slic-segments: expected a positive integer"
    ),
    "compare/option/alignment=missing": compare(
        "{clip}",
        "--metrics",
        "plausibility",
        "--alignment",
        "nope.TextGrid",
        code=1,
        fragment="TextGrid file not found: 'nope.TextGrid'",
    ),  # fmt: skip
    "compare/option/alignment=garbage": compare(
        "{clip}",
        "--metrics",
        "plausibility",
        "--alignment",
        "{file:garbage}",
        code=1,
        fragment="as a Praat TextGrid",
    ),  # fmt: skip
    "compare/option/tier=unknown": compare(
        "{clip}",
        "--metrics",
        "plausibility",
        "--alignment",
        "{textgrid}",
        "--tier",
        "nope",
        code=1,
        fragment="tier 'nope' not found in",
    ),  # fmt: skip
    "compare/option/plausibility-without-alignment": compare(
        "{clip}",
        "--metrics",
        "plausibility",
        code=1,
        fragment="--metrics plausibility needs the word alignment: pass --alignment TEXTGRID",
    ),  # fmt: skip
    "compare/option/alignment-without-plausibility": compare(
        "{clip}",
        "--alignment",
        "{textgrid}",
        code=1,
        fragment="--alignment is used by the plausibility metric only",
    ),  # fmt: skip
    "compare/option/model=unknown": compare(
        "{clip}", "--model", "no-such-model", code=1, fragment="unknown model 'no-such-model'"
    ),
    "compare/option/device=cuda": compare(
        "{clip}", "--device", "cuda", code=2, fragment="unrecognized arguments: --device cuda"
    ),
    "info/option/unknown": CLICase(("info", "--bogus"), 2, "unrecognized arguments: --bogus"),
    "command/none": CLICase((), 2, "the following arguments are required: COMMAND"),
    "command/unknown": CLICase(("explode",), 2, "argument COMMAND: invalid choice: 'explode'"),
    "command/option-unknown": CLICase(("--bogus", "info"), 2, "unrecognized arguments: --bogus"),
}


def _fill(argv: tuple[str, ...], files: dict[str, Path], out: Path) -> list[str]:
    sample = load_sample("librivox_0880")
    values = {
        "{out}": str(out),
        "{clip}": str(sample.path),
        "{textgrid}": str(next(sample.path.parent.glob("*.TextGrid"))),
        **{f"{{file:{kind}}}": str(path) for kind, path in files.items()},
    }
    return [values.get(arg, arg) for arg in argv]


@pytest.mark.parametrize("case_id", list(CLI_CASES))
def test_cli_bad_input(
    case_id: str, files: dict[str, Path], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CLI_CASES[case_id]
    monkeypatch.setitem(cli.MODEL_FACTORIES, TINY, tiny_factory)
    monkeypatch.chdir(tmp_path)  # relative paths in the rows resolve here
    argv = _fill(case.argv, files, tmp_path / "out")
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    captured = capsys.readouterr()
    assert code == case.code, (argv, captured.err)
    assert "Traceback" not in captured.err, captured.err
    if case.code == 0:
        assert case.fragment in captured.out, captured.out
        return
    lines = [line for line in captured.err.splitlines() if line.strip()]
    if case.code == 1:
        assert len(lines) == 1 and lines[0].startswith("captum-spes: error: "), captured.err
    else:  # argparse: its usage, then "PROG: error: ..."
        assert lines[0].startswith("usage: captum-spes") and ": error: " in lines[-1], captured.err
    assert case.fragment in lines[-1], lines[-1]
    if case_id.startswith(("explain/file", "compare/file")):
        assert not (tmp_path / "out").exists()  # refused before any output was written


# ----- the Python API -------------------------------------------------------------------
@dataclass(frozen=True)
class APICase:
    """``call(context)``; ``error`` None means handled: then ``check(returned)`` must hold."""

    call: Callable[[dict[str, Any]], Any]
    error: type[BaseException] | None
    fragment: str = ""
    check: Callable[[Any], bool] | None = None


@pytest.fixture(scope="module")
def context(files: dict[str, Path]) -> dict[str, Any]:
    model = tiny_whisper()
    wrapper = SpeechSeq2SeqWrapper(model)
    return {"files": files, "model": model, "spes": SPES(wrapper), "features": whisper_features()}


def _attribute(**kwargs: Any) -> Callable[[dict[str, Any]], Any]:
    def call(ctx: dict[str, Any]) -> Any:
        return ctx["spes"].attribute(ctx["features"], **({"n_masks": 6} | kwargs))

    return call


def _attribute_on(inputs: Callable[[torch.Tensor], Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda ctx: ctx["spes"].attribute(inputs(ctx["features"]), n_masks=6)


def _load(kind: str, **kwargs: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda ctx: load_audio(ctx["files"][kind], **kwargs)


def _describe(kind: str) -> Callable[[dict[str, Any]], Any]:
    return lambda ctx: read_audio(ctx["files"][kind]).describe()


def _load_model(name: str, **kwargs: Any) -> Callable[[dict[str, Any]], Any]:
    def call(ctx: dict[str, Any]) -> Any:
        from captum_spes.models import load_model

        return load_model(name, **kwargs)

    return call


def _salient_audio(num_samples: int) -> Callable[[dict[str, Any]], Any]:
    def call(ctx: dict[str, Any]) -> Any:
        from test_visualization_report import make_result

        from captum_spes.visualization import salient_audio

        return salient_audio(make_result(), np.zeros(num_samples, np.float32) + 0.1)

    return call


def _model_load_error() -> type[BaseException]:
    from captum_spes.models import ModelLoadError

    return ModelLoadError


API_CASES: dict[str, APICase] = {
    **{
        f"load_audio/{kind}": APICase(_load(kind), AudioError, message.split(";")[0])
        for kind, message in _FILE_ERRORS.items()
        if kind not in ("short", "long")
    },
    "load_audio/short": APICase(_load("short"), None, check=lambda y: y.shape == (100,)),
    "load_audio/long": APICase(_load("long"), None, check=lambda y: y.shape == (31 * RATE,)),
    "load_audio/silent-allowed": APICase(
        _load("silent", allow_silence=True), None, check=lambda y: y.shape == (RATE,) and not y.any()
    ),
    "load_audio/sampling_rate=0": APICase(
        _load("stereo", sampling_rate=0), AudioError, "target_sr must be a positive integer number of Hz, got 0"
    ),
    **{
        f"read_audio/{kind}": APICase(_describe(kind), None, check=lambda line, m=message: m in line)
        for kind, message in _FILE_HANDLED.items()
    },
    "salient_audio/short-waveform": APICase(
        _salient_audio(100), InputError, "waveform has 100 samples, fewer than one STFT window (n_fft=400, 25 ms"
    ),
    "attribute/n_masks=0": APICase(_attribute(n_masks=0), ValueError, "n_masks must be a positive int, got 0"),
    "attribute/n_masks=-1": APICase(_attribute(n_masks=-1), ValueError, "n_masks must be a positive int, got -1"),
    "attribute/n_masks=2": APICase(
        _attribute(n_masks=2), ValueError, "n_masks=2 is smaller than the number of mask levels (3)"
    ),
    "attribute/n_masks=1.5": APICase(
        _attribute(n_masks=1.5), TypeError, 'n_masks must be an int, a list of ints, "auto" or AdaptiveMasks, got float'
    ),
    "attribute/target=0": APICase(
        _attribute(target=0), ValueError, "target=0 looks like a Captum output index, which SPES does not take"
    ),
    "attribute/target=(2,1)": APICase(
        _attribute(target=(2, 1)), ValueError, "to read the explanation of position k, take result.spectrogram_attr[k]"
    ),
    "attribute/n_token_masks-without-token-map": APICase(
        _attribute(token_p=None, n_token_masks=5),
        ValueError,
        "n_token_masks configures the token map, but token_p=None",
    ),
    "attribute/token_masks-without-token-map": APICase(
        _attribute(token_p=None, token_masks="joint"), ValueError, "token_masks configures the token map"
    ),
    "attribute/perturb_prompt-without-token-map": APICase(
        _attribute(token_p=None, perturb_prompt=False), ValueError, "perturb_prompt configures the token map"
    ),
    "attribute/prompt_ids-with-a-Hypothesis-target": APICase(
        lambda ctx: ctx["spes"].attribute(
            ctx["features"], n_masks=6, target=ctx["spes"].wrapper.set_hypothesis(ctx["features"]), prompt_ids=[98]
        ),
        ValueError,
        "prompt_ids is ignored when target is a Hypothesis",
    ),
    "attribute/generate_kwargs-with-a-Hypothesis-target": APICase(
        lambda ctx: ctx["spes"].attribute(
            ctx["features"],
            n_masks=6,
            target=ctx["spes"].wrapper.set_hypothesis(ctx["features"]),
            generate_kwargs={"num_beams": 2},
        ),
        ValueError,
        "generate_kwargs is ignored when target is a Hypothesis",
    ),
    "attribute/coarse_to_fine-with-per-level-counts": APICase(
        _attribute(n_masks=[4, 4, 4], estimator="coarse_to_fine"),
        ValueError,
        "pass one budget, n_masks=<int>, not one count per level",
    ),
    "attribute/adaptive-round_size-below-levels": APICase(
        _attribute(n_masks=AdaptiveMasks(round_size=2, max_masks=100, min_masks=2)),
        ValueError,
        "AdaptiveMasks(round_size=2) is smaller than the number of mask levels (3)",
    ),
    "attribute/model-in-training-mode": APICase(
        lambda ctx: SPES(SpeechSeq2SeqWrapper(tiny_whisper().train())).attribute(ctx["features"], n_masks=6),
        ValueError,
        "the model is in training mode",
    ),
    "attribute/utterance_id=3": APICase(_attribute(utterance_id=3), TypeError, "utterance_id must be a str, got int"),
    "attribute/estimator=nope": APICase(
        _attribute(estimator="nope"), ValueError, "estimator='nope' is not a registered estimator"
    ),
    "attribute/inputs=wrong-n_mels": APICase(
        _attribute_on(lambda x: x[:, :40]), ValueError, "inputs have 40 mel bins but WhisperForConditionalGeneration"
    ),
    "attribute/n_masks=many": APICase(
        _attribute(n_masks="many"), ValueError, 'n_masks must be an int, a list of ints, "auto" or AdaptiveMasks'
    ),
    "attribute/n_masks=[0,1,2]": APICase(
        _attribute(n_masks=[0, 1, 2]), ValueError, "n_masks as a list needs one positive int per mask level"
    ),
    "attribute/perturbations_per_eval=0": APICase(
        _attribute(perturbations_per_eval=0), ValueError, "perturbations_per_eval must be a positive int, got 0"
    ),
    "attribute/seed=-1": APICase(_attribute(seed=-1), ValueError, "seed must be a non-negative int, got -1"),
    "attribute/seed=1.5": APICase(_attribute(seed=1.5), ValueError, "seed must be a non-negative int, got 1.5"),
    "attribute/baselines=nope": APICase(
        _attribute(baselines="nope"), ValueError, "baselines='nope' is not known; use one of"
    ),
    "attribute/num_frames=0": APICase(
        _attribute(num_frames=0), ValueError, "num_frames must be an int in [1, 300] (frames holding audio), got 0"
    ),
    "attribute/num_frames=too-many": APICase(
        _attribute(num_frames=10**6), ValueError, "num_frames must be an int in [1, 300]"
    ),
    "attribute/token_p=0": APICase(_attribute(token_p=0), ValueError, "token_p=0 would return an all-zero token map"),
    "attribute/token_p=1.5": APICase(
        _attribute(token_p=1.5), ValueError, "token_p must be a probability strictly between 0 and 1, got 1.5"
    ),
    "attribute/token_masks=nope": APICase(
        _attribute(token_masks="nope"), ValueError, "token_masks must be one of ('decoupled', 'joint')"
    ),
    "attribute/n_token_masks=0": APICase(
        _attribute(n_token_masks=0), ValueError, "n_token_masks must be a positive int, got 0"
    ),
    "attribute/inputs=list": APICase(
        _attribute_on(lambda x: [1, 2]), TypeError, "inputs must be a Tensor of features, got list"
    ),
    "attribute/inputs=2-D": APICase(
        _attribute_on(lambda x: x[0]), ValueError, "inputs must have shape (1, n_mels, n_frames)"
    ),
    "attribute/inputs=batch-of-2": APICase(
        _attribute_on(lambda x: x.expand(2, -1, -1)), ValueError, "one utterance per call, but inputs has batch size 2"
    ),
    "attribute/inputs=NaN": APICase(
        _attribute_on(lambda x: x * float("nan")), ValueError, "inputs holds NaN or inf values"
    ),
    "attribute/inputs=int": APICase(
        _attribute_on(lambda x: x.long()), TypeError, "inputs must be floating-point features, got dtype torch.int64"
    ),
    "SpeechSeq2SeqWrapper/model=str": APICase(
        lambda ctx: SpeechSeq2SeqWrapper("whisper"), TypeError, "unsupported model str: SPES explains"
    ),
    "SpeechSeq2SeqWrapper/model=Linear": APICase(
        lambda ctx: SpeechSeq2SeqWrapper(torch.nn.Linear(2, 2)), TypeError, "unsupported model Linear"
    ),
    "SpeechSeq2SeqWrapper/text-target-without-processor": APICase(
        lambda ctx: SpeechSeq2SeqWrapper(ctx["model"]).set_hypothesis(ctx["features"], "hello"),
        ValueError,
        "target is text but the wrapper has no tokenizer: pass processor=",
    ),
    "load_model/missing-folder": APICase(
        _load_model("/no/such/folder"), ValueError, "'/no/such/folder' is not a model folder"
    ),
    "load_model/torch_dtype=int8": APICase(
        _load_model("tiny.en", torch_dtype=torch.int8), ValueError, "`torch_dtype` must be a floating torch.dtype"
    ),
    "load_model/device=cuda-unavailable": APICase(
        _load_model("tiny.en", device="cuda:99"), ValueError, "`device` 'cuda:99'"
    ),
    "load_model/unknown-hub-id-offline": APICase(
        _load_model("nobody/no-such-model"), ValueError, "Could not load 'nobody/no-such-model'"
    ),
}


@pytest.mark.parametrize("case_id", list(API_CASES))
def test_api_bad_input(case_id: str, context: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    case = API_CASES[case_id]
    # No hub: a hub id fails at once instead of after the client's retries.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if case.error is None:
        returned = case.call(context)
        assert case.check is not None and case.check(returned), returned
        return
    with pytest.raises(case.error) as caught:
        case.call(context)
    assert case.fragment in str(caught.value)
    if case_id.startswith("load_model/"):
        assert isinstance(caught.value, _model_load_error())
