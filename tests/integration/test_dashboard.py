"""The dashboard, rendered by a real headless Chromium: worker rows, live numbers, a drawn chart."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import free_port
from tests.integration.load import background_load

CHROMIUM = os.environ.get("FORKSERVE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def test_the_dashboard_shows_every_worker_and_draws_the_request_rate(serve, browser, tmp_path):
    metrics = f"127.0.0.1:{free_port()}"
    server = serve("-w", "2", "--metrics-bind", metrics, wait=2)
    pids = server.wait_workers(2)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    with background_load(server.url, keep_alive=2, fresh=1):
        page.goto(f"http://{metrics}/dashboard")
        page.wait_for_function("document.querySelectorAll('#workers tr.worker').length === 2", timeout=10_000)
        # Requests/s needs two polls; then the chart has a line and the card a number.
        page.wait_for_function(
            "document.querySelector('#chart-rps polyline') !== null"
            " && parseFloat(document.querySelector('#rps').textContent) > 0",
            timeout=15_000,
        )
        rows = page.locator("#workers tr.worker")
        shown = {int(rows.nth(i).get_attribute("data-pid") or 0) for i in range(rows.count())}
        assert shown == pids
        assert page.locator("#workers tr.worker td.state").all_inner_texts() == ["ready", "ready"]
        assert page.inner_text("#health") == "healthy"
        assert "worker_ready" in page.inner_text("#events")
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    assert not errors, errors
