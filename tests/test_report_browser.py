#!/usr/bin/env python3
"""The HTML report in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright's Python package without any Playwright-downloaded browser).

In CI (env CI=true) a missing browser or driver is a failure, not a skip: .ci/browser-deps.sh
installs them. Elsewhere the test skips when they are absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from captum_spes import SPESResult
from captum_spes.visualization import write_html_report

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI must run the browser test: run .ci/browser-deps.sh first")
    pytest.skip(reason)


def _chromium() -> str:
    # CAPTUM_SPES_CHROMIUM names the browser explicitly (and only that one).
    override = os.environ.get("CAPTUM_SPES_CHROMIUM")
    candidates = [override] if override else list(CHROMIUM_CANDIDATES) + [shutil.which("chromium") or ""]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    _unavailable(f"chromium is not installed at {candidates[0]} (apt-get install -y chromium)")
    raise AssertionError("unreachable")


def make_result() -> SPESResult:
    generator = torch.Generator().manual_seed(0)
    tokens = [" he", " was", " no", "t", "<|endoftext|>"]
    inputs = ["<|startoftranscript|>", "<|notimestamps|>"] + tokens[:-1]
    spec = torch.rand(len(tokens), 80, 150, generator=generator) * 0.1
    for k in range(len(tokens)):  # a distinct salient block per token, so overlays differ
        spec[k, 10 + 12 * k : 22 + 12 * k, 25 * k : 25 * k + 30] += 1.0
    result = SPESResult(
        spectrogram_attr=spec,
        token_attr=torch.rand(len(tokens), len(inputs), generator=generator),
        target_ids=[10, 11, 12, 13, 14],
        tokens=tokens,
        decoder_input_ids=list(range(6)),
        decoder_input_tokens=inputs,
        num_prompt=2,
        target_log_probs=-torch.rand(len(tokens)),
        text="".join(tokens[:-1]),
        metadata={"frame_rate": 100.0, "n_masks": 30, "seed": 0},
    )
    result.token_attr = torch.where(result.token_valid_mask(), result.token_attr, torch.zeros(()))
    return result


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, headless=True, args=LAUNCH_ARGS)
        yield instance
        instance.close()


OVERLAY_SUM = """() => {
  const c = document.getElementById('overlay');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] * 3 + d[i + 1] * 5 + d[i + 2] * 7 + d[i + 3];
  return s;
}"""


def _ink_fraction(png: bytes) -> float:
    """Mean darkness of a screenshot, 0 (white) to 1 (black): the icons are #222 on white."""
    import io

    from PIL import Image

    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(np.mean(1.0 - grey / 255.0))


def _assert_icons_render(page) -> None:
    """Every play/listen button draws its SVG icon: no font glyph needed, a visible shape, a label."""
    for selector in ("button.play-word", "button.listen-word"):
        buttons = page.locator(selector)
        assert buttons.count() > 0, selector
        button = buttons.first
        # No text: an icon made of a character needs a font with that glyph (an emoji font
        # for the speaker), which Debian's chromium lacks, and then shows an empty box.
        assert button.inner_text().strip() == "", selector
        assert button.get_attribute("aria-label"), selector
        icon = button.locator("svg.icon")
        box = icon.bounding_box()
        assert box is not None and box["width"] >= 8 and box["height"] >= 8, (selector, box)
        # A drawn shape, neither blank nor a filled square: the play triangle covers 20 % of
        # its 16 x 16 view box, the speaker and its waves about 27 % (Debian's chromium 0.15
        # and 0.23 mean darkness, antialiased).
        ink = _ink_fraction(icon.screenshot())
        assert 0.08 < ink < 0.5, (selector, ink)


def test_report_in_chromium(browser, tmp_path) -> None:
    waveform = (0.3 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000)).astype(np.float32)
    path = write_html_report(
        make_result(), tmp_path / "report.html", waveform=waveform, features=torch.randn(1, 80, 3000)
    )
    page = browser.new_page()
    errors: list = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests: list = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)

    overlay = page.locator("#overlay")
    assert overlay.get_attribute("data-active") == "utterance"
    before = page.evaluate(OVERLAY_SUM)
    assert before > 0

    page.locator(".word[data-word-index='2']").click()
    assert overlay.get_attribute("data-active-word") == "2"
    assert overlay.get_attribute("data-active") == "word:2"
    after_word = page.evaluate(OVERLAY_SUM)
    assert after_word != before
    # The word's subword tokens are highlighted with it.
    assert page.locator(".token.active").count() == 2

    page.locator(".token[data-token-index='0']").click()
    assert overlay.get_attribute("data-active-token") == "0"
    assert overlay.get_attribute("data-active-word") == ""
    assert page.evaluate(OVERLAY_SUM) not in (before, after_word)

    # Playing a word's salient region seeks to its span (play() may be refused headless).
    button = page.locator("button.play-word[data-word-index='1']")
    button.click()
    audio = page.locator("#audio")
    start, end = float(button.get_attribute("data-start")), float(button.get_attribute("data-end"))
    assert 0 <= start < end <= 1.5
    assert float(audio.get_attribute("data-play-start")) == pytest.approx(start)
    assert float(audio.get_attribute("data-play-end")) == pytest.approx(end)
    assert overlay.get_attribute("data-active-word") == "1"

    source = page.evaluate("() => document.getElementById('audio').currentSrc || document.getElementById('audio').src")
    assert source.startswith("data:audio/wav;base64,") and len(source) > 1000
    assert page.evaluate("() => document.getElementById('audio').error") is None

    # The listenable explanation of a word: its resynthesised salient audio, embedded.
    page.locator("button.listen-word[data-word-index='0']").click()
    assert overlay.get_attribute("data-active-word") == "0"
    clip = page.locator(".listen-audio[data-word-index='0']")
    assert clip.get_attribute("data-playing") == "1"
    assert clip.get_attribute("src").startswith("data:audio/wav;base64,")

    _assert_icons_render(page)

    page.locator("#show-utterance").click()
    assert overlay.get_attribute("data-active") == "utterance"
    assert page.evaluate(OVERLAY_SUM) == before

    # Offline: nothing but the file itself (and data: URIs) was requested.
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert errors == [], errors
    screenshot = os.environ.get("CAPTUM_SPES_SCREENSHOT")
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)
    page.close()


def test_report_mutes_what_is_not_significant(browser, tmp_path) -> None:
    # Two units per token: its salient block (significant for that token only) and the rest.
    result = make_result()
    k = result.num_tokens
    units = torch.zeros(80, 150, dtype=torch.long)
    units[10:22, 0:30] = 1  # token 0's block
    result.units = units
    result.unit_occluded = torch.tensor([10.0, 10.0], dtype=torch.float64)
    z = torch.zeros(k, 2)
    z[0, 1] = 9.0
    result.spectrogram_z, result.spectrogram_se = z, torch.ones(k, 2)
    path = write_html_report(result, tmp_path / "significant.html", features=torch.randn(1, 80, 3000))
    plain = write_html_report(result, tmp_path / "plain.html", features=torch.randn(1, 80, 3000), significance=None)
    page = browser.new_page()
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    assert "Bright: significant at 0.05" in page.locator("#significance").inner_text()
    page.locator(".token[data-token-index='0']").click()
    overlay = page.locator("#overlay")
    assert overlay.get_attribute("data-significant") == str(12 * 30)
    muted = page.evaluate(OVERLAY_SUM)
    page.locator(".token[data-token-index='1']").click()
    assert overlay.get_attribute("data-significant") == "0"
    other = page.evaluate(OVERLAY_SUM)
    page.goto(plain.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    assert page.locator("#significance").inner_text() == ""
    page.locator(".token[data-token-index='0']").click()
    assert overlay.get_attribute("data-significant") == ""
    full = page.evaluate(OVERLAY_SUM)
    # Muting lowers the overlay's opacity outside the significant block; nothing is muted
    # without statistics.
    assert muted < full and other < muted
    page.close()
