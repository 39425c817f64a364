"""The validator's live dashboard in a real headless browser (Debian's Chromium, driven by Playwright):
the page loads, shows live data from a running local network, updates as probes happen, and logs no
console error. The page loads nothing from outside the validator."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from omron_tee.devnet.processes import free_port
from omron_tee.validator.api.routes import running_api

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root in a sandbox without outbound access: no sandbox, no background connections (they are refused here).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def test_the_dashboard_shows_live_data_in_headless_chromium(net, tmp_path) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    if not shutil.which(CHROMIUM):
        pytest.fail("Chromium is not installed: `./run tests` installs Debian's chromium (apt-get install chromium)")

    async def go():
        v = net.validator(tmp_path / "scores.sqlite")
        try:
            v.sync()
            miners = v.miners()
            for _ in range(2):
                for r in await asyncio.gather(*(v.prober.probe(n) for n in miners)):
                    v._scored(r)
            async with running_api(v, port=free_port()) as url:
                async with playwright.async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                    try:
                        page = await browser.new_page()
                        problems: list[str] = []
                        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
                        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                        outside: list[str] = []
                        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
                        await page.goto(url + "/dashboard")
                        await page.wait_for_selector("body[data-loaded]", timeout=15_000)
                        first = await _read(page)
                        # Live: more probes happen; the page's next poll shows them.
                        for r in await asyncio.gather(*(v.prober.probe(n) for n in miners)):
                            v._scored(r)
                        await page.wait_for_function(f"document.querySelectorAll('#recent tbody tr').length > {first['recent']}", timeout=15_000)
                        second = await _read(page)
                        data = await (await page.request.get(url + "/v1/dashboard")).json()
                        return miners, first, second, problems, outside, data
                    finally:
                        await browser.close()
        finally:
            await v.prober.client.aclose()
            v.scores.close()

    miners, first, second, problems, outside, data = asyncio.run(go())
    # Public facts only: these fields and no others, none of which can carry an input or an output.
    assert {k for e in data["recent"] for k in e} == {"t", "uid", "model", "latency_class", "kind", "reason", "ok", "latency_ms", "score"}
    assert all(isinstance(e[k], (int, float, type(None))) for e in data["recent"] for k in ("t", "uid", "latency_ms", "score"))
    assert {k for m in data["miners"] for k in m} == {"uid", "hotkey", "probes", "verified", "failed", "reasons", "score", "weight", "consensus", "incentive"}
    assert problems == [], problems
    assert outside == [], outside  # no CDN, no font, nothing from elsewhere
    assert first["miners"] == len(miners) and first["recent"] == 2 * len(miners)
    assert second["recent"] == 3 * len(miners)
    assert "measurement-not-allowed" in second["miners_text"] and "wrong-output" in second["miners_text"]
    assert "ok" in second["recent_text"] and "unreachable" in second["recent_text"]
    assert "block" in second["who"] and second["validators"] >= 1
    assert second["error_shown"] is False


async def _read(page) -> dict:
    return await page.evaluate("""() => ({
        miners: document.querySelectorAll('#miners tbody tr').length,
        recent: document.querySelectorAll('#recent tbody tr').length,
        validators: document.querySelectorAll('#validators tbody tr').length,
        miners_text: document.querySelector('#miners').innerText,
        recent_text: document.querySelector('#recent').innerText,
        who: document.querySelector('#who').innerText,
        error_shown: getComputedStyle(document.querySelector('#error')).display !== 'none',
    })""")
