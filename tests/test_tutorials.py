r"""The tutorial notebooks run end to end with the embedded models.

Each notebook in ``tutorials/`` is executed with nbclient in a fresh kernel of *this*
interpreter (a private kernel spec, so another ``python3`` kernel on the machine cannot be
picked up by mistake), in a temporary working directory, with the tutorials' CI settings:
few SPES masks (``CAPTUM_SPES_TUTORIAL_MASKS``), few Integrated Gradients steps and a coarse
occlusion window. A cell that raises fails the test. The converted models are cached in one
temporary folder for the whole session (``CAPTUM_SPES_CACHE``), so ``base`` is converted once;
an existing ``CAPTUM_SPES_CACHE`` is kept.

Fast checks (no model) verify that the stored notebooks are valid, carry no outputs and read
the mask count from the environment.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from helpers import require

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = [
    "01_explain_whisper_transcription.ipynb",
    "02_spes_vs_integrated_gradients_vs_occlusion.ipynb",
    "03_explain_speech_translation.ipynb",
    "04_evaluating_explanations.ipynb",
    "05_contrastive_gender_translation.ipynb",
]
KERNEL_NAME = "captum-spes-tutorials"
CELL_TIMEOUT_S = 600
CI_SETTINGS = {
    "CAPTUM_SPES_TUTORIAL_MASKS": "24",
    "CAPTUM_SPES_TUTORIAL_IG_STEPS": "4",
    "CAPTUM_SPES_TUTORIAL_OCCLUSION_WINDOW": "80,20",
}


def _require_models(*names: str) -> None:
    from captum_spes.models import embedded_model_status

    status = embedded_model_status()
    missing = [n for n in names if not status[n]["installed"]]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"the [models] extra is not installed (missing {missing})")


# ----- fast checks on the stored notebooks ---------------------------------------------
def test_tutorial_notebooks_are_listed() -> None:
    assert sorted(p.name for p in TUTORIALS.glob("*.ipynb")) == sorted(NOTEBOOKS)
    readme = (TUTORIALS / "README.md").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        assert name in readme


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_is_stored_small_and_configurable(name: str) -> None:
    path = TUTORIALS / name
    assert path.stat().st_size < 100_000, "strip the outputs before saving the notebook"
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    source = "".join("".join(c["source"]) for c in nb["cells"])
    assert 'os.environ.get("CAPTUM_SPES_TUTORIAL_MASKS"' in source
    assert "20 000 masks" in source
    nbformat = require("nbformat")
    nbformat.validate(nbformat.reads(path.read_text(encoding="utf-8"), as_version=4))


# ----- executing them ------------------------------------------------------------------
@pytest.fixture(scope="session")
def tutorial_session(tmp_path_factory: pytest.TempPathFactory) -> dict:
    r"""A kernel spec for this interpreter and a model cache shared by all notebooks."""
    root = tmp_path_factory.mktemp("tutorial_session")
    spec = root / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "captum-spes tutorials",
                "language": "python",
            }
        )
    )
    cache = os.environ.get("CAPTUM_SPES_CACHE") or str(root / "model_cache")
    return {"jupyter_path": str(root / "jupyter"), "cache": cache}


@pytest.mark.real_model
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_executes(name: str, tutorial_session: dict, tmp_path: Path, monkeypatch) -> None:
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("ipykernel")
    _require_models("tiny.en", "base")

    # The kernel inherits this environment.
    for key, value in CI_SETTINGS.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    monkeypatch.setenv("CAPTUM_SPES_CACHE", tutorial_session["cache"])
    monkeypatch.setenv("MPLBACKEND", "Agg")
    jupyter_path = os.pathsep.join(filter(None, [tutorial_session["jupyter_path"], os.environ.get("JUPYTER_PATH")]))
    monkeypatch.setenv("JUPYTER_PATH", jupyter_path)

    nb = nbformat.read(str(TUTORIALS / name), as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError when a cell raises
    print(f"{name}: executed in {time.perf_counter() - started:.1f} s")

    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
    # The notebooks write their files into the working directory, not next to the notebook.
    if name.startswith("01_"):
        assert (tmp_path / "librivox_0880_spes.safetensors").is_file()
        assert (tmp_path / "librivox_0880_report.html").is_file()
    if name.startswith("05_"):
        assert "Contrastive explanation" in (tmp_path / "librivox_0880_contrast_report.html").read_text(
            encoding="utf-8"
        )
