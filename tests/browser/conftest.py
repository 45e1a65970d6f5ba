"""Fixtures for the browser tests: a private JupyterLab server and a headless Chromium.

The server is described in lab_server.py. Chromium is Debian's
(``/usr/bin/chromium``, or ``DCLAB_CHROMIUM``) driven by Playwright for
Python; nothing here downloads a browser. Without Chromium or the playwright
package every test that needs them is skipped with the reason.

``DCLAB_BROWSER_ARTIFACTS`` sets where screenshots go (default
``test-artifacts/browser``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab_server import ROOT, LabServer, start_lab_server, stop_lab_server

DEFAULT_CHROMIUM = "/usr/bin/chromium"

# Chromium's switches: headless, no sandbox (the tests run as root in CI
# containers), no GPU, and no connection anywhere but the test server.
# Playwright adds --headless itself for headless=True; it is listed so the set
# does not depend on that. The profile is a fresh --user-data-dir that
# Playwright passes for launch_persistent_context().
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Docker gives containers a 64 MB /dev/shm, too small for Chromium's shared memory.
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """JupyterLab on 127.0.0.1 for the session; it is stopped at the end, also after failures."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed in this environment")
    server = start_lab_server(tmp_path_factory.mktemp("jupyterlab"))
    try:
        yield server
    finally:
        stop_lab_server(server)


def chromium_path() -> str:
    """Return the Chromium executable to use, or skip the test with the reason it is missing."""
    path = os.environ.get("DCLAB_CHROMIUM", DEFAULT_CHROMIUM)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip(
            f"Chromium not found at {path}: install Debian's package (`apt-get install chromium`, "
            "as `bash .ci/run` does) or set DCLAB_CHROMIUM to a Chromium executable"
        )
    return path


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory: pytest.TempPathFactory):
    """Launch headless Chromium with a fresh profile for the session; it is closed at the end, also after failures."""
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the playwright package is not installed; `pip install -e '.[dev]'` installs it",
    )
    executable = chromium_path()
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def lab_page(browser_context, lab_server: LabServer):
    """A new browser tab; closed afterwards, and every kernel the test started is shut down.

    The browser comes first, so a missing Chromium skips before the server starts.
    """
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        page.close()
        lab_server.shutdown_kernels()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """The folder the screenshots are written to; it survives the test run."""
    folder = Path(os.environ.get("DCLAB_BROWSER_ARTIFACTS", ROOT / "test-artifacts" / "browser"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
