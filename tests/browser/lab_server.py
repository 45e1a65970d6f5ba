"""A private JupyterLab server for the browser tests.

The server runs from the test's own Python environment on 127.0.0.1 with a
free port and a random token, in quick mode (``DCLAB_QUICK=1``). It gets
temporary Jupyter config, data and runtime folders and serves a temporary
copy of the notebooks, so neither the user's settings nor the repository's
notebooks are touched.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LOOPBACK = "127.0.0.1"

# Bounds on the waits, in seconds. They are generous because the machines
# that run the suite may be shared and slow; each error names the wait that ran out.
SERVER_START_TIMEOUT_S = 180
SERVER_STOP_TIMEOUT_S = 20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab server.

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:41234``.
        token: the server's random token.
        root_dir: the folder it serves (a temporary copy of the notebooks).
        process: the server process (a process group leader).
        log_path: the server's combined stdout and stderr.
    """

    url: str
    token: str
    root_dir: Path
    process: subprocess.Popen
    log_path: Path

    def api(self, path: str, method: str = "GET", body: dict | None = None) -> object:
        """Call the REST API at ``path`` (e.g. ``/api/status``) and return the decoded JSON, or None when empty."""
        headers = {"Authorization": f"token {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        # A kernel start on a loaded machine can take a while, hence the long timeout.
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, characters: int = 4000) -> str:
        """Return the end of the server's log, for failure messages."""
        return self.log_path.read_text(errors="replace")[-characters:]

    def shutdown_kernels(self) -> None:
        """Delete every session, which shuts its kernel down, so finished notebooks free their CPU and memory."""
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def listening_addresses(process: psutil.Process) -> dict[int, list[str]]:
    """Map the pid of ``process`` and of each descendant to the addresses its TCP sockets listen on."""
    addresses: dict[int, list[str]] = {}
    for member in [process, *process.children(recursive=True)]:
        try:
            sockets = member.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        addresses[member.pid] = [socket_.laddr.ip for socket_ in sockets if socket_.status == psutil.CONN_LISTEN]
    return addresses


def notebooks_dir() -> Path:
    """Return the folder of lecture notebooks to test: ``DCLAB_BROWSER_NOTEBOOKS``, or notebooks/ of this checkout."""
    return Path(os.environ.get("DCLAB_BROWSER_NOTEBOOKS", ROOT / "notebooks"))


def _copy_notebooks(root_dir: Path) -> None:
    """Copy the lecture notebooks and the fixture notebooks under ``root_dir``."""
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    notebooks = notebooks_dir()
    if notebooks.is_dir():
        shutil.copytree(notebooks, root_dir / "notebooks", ignore=ignore)
    (root_dir / "fixtures").mkdir()
    for notebook in FIXTURES.glob("*.ipynb"):
        shutil.copy2(notebook, root_dir / "fixtures" / notebook.name)


def _write_config(config_dir: Path, disabled_extensions: Sequence[str]) -> None:
    """Write the server and JupyterLab settings into the temporary Jupyter config folder."""
    server_config = {
        "ServerApp": {"terminals_enabled": False, "allow_remote_access": False},
        # window.jupyterapp lets the tests call JupyterLab commands. The news
        # feed, the update check and the PyPI extension manager would otherwise
        # reach out to the internet.
        "LabApp": {
            "expose_app_in_browser": True,
            "extension_manager": "readonly",
            "news_url": None,
            "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        },
    }
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(server_config, indent=1))

    user_settings = {
        # Render every cell (no windowing), so the page contains all outputs the tests inspect.
        ("notebook-extension", "tracker"): {"windowingMode": "none"},
        # No "get notified about Jupyter news?" toast over the screenshots.
        ("apputils-extension", "notification"): {"fetchNews": "false", "checkForUpdates": False},
    }
    for (extension, plugin), settings in user_settings.items():
        path = config_dir / "lab" / "user-settings" / "@jupyterlab" / extension / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))

    if disabled_extensions:
        # The file and key that `jupyter labextension disable` writes in JupyterLab 4.
        page_config = config_dir / "labconfig" / "page_config.json"
        page_config.parent.mkdir(parents=True, exist_ok=True)
        page_config.write_text(json.dumps({"disabledExtensions": {name: True for name in disabled_extensions}}))


def _server_environment(jupyter_home: Path) -> dict[str, str]:
    """Return the server's environment: quick mode, private Jupyter folders, and this checkout's dclab first on the path."""
    environment = dict(os.environ)
    for variable, folder in {
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "IPYTHONDIR": "ipython",
    }.items():
        path = jupyter_home / folder
        path.mkdir(exist_ok=True)
        environment[variable] = str(path)
    environment["JUPYTER_PREFER_ENV_PATH"] = "1"
    environment["DCLAB_QUICK"] = "1"
    # Kernels start in the notebook's folder, so a relative PYTHONPATH would not reach the checkout.
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    return environment


def _wait_until_ready(server: LabServer, timeout_s: float) -> None:
    """Poll /api/status until it answers; raise with the server's log when the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with code {server.process.returncode} before it answered; log:\n{server.log_tail()}"
            )
        try:
            server.api("/api/status")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"JupyterLab did not answer {server.url}/api/status within {timeout_s} s; log:\n{server.log_tail()}")
        time.sleep(0.5)


def _lab_command(port: int, token: str, root_dir: Path) -> list[str]:
    """Return the command line that starts JupyterLab on 127.0.0.1:``port`` with ``token``, serving ``root_dir``."""
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.open_browser=False",
        f"--ServerApp.ip={LOOPBACK}",
        f"--ServerApp.port={port}",
        # Fail instead of silently moving to another port if the free port was taken meanwhile.
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
    ]
    if os.geteuid() == 0:
        # CI containers run as root, which Jupyter refuses without this switch.
        command.append("--allow-root")
    return command


def start_lab_server(
    base: Path, timeout_s: float = SERVER_START_TIMEOUT_S, disabled_extensions: Sequence[str] = ()
) -> LabServer:
    """Start JupyterLab on 127.0.0.1 serving a copy of the notebooks under ``base``; wait until it answers.

    The caller must call :func:`stop_lab_server` once it is done with the server.

    Args:
        base: an empty folder for the served copy, the Jupyter folders and the log.
        timeout_s: how long to wait for /api/status.
        disabled_extensions: JupyterLab extensions to disable, to test what a student sees without them.

    Raises:
        RuntimeError: the server exited before it answered (the message holds its log).
        TimeoutError: it did not answer within ``timeout_s``. The process is stopped before either error propagates.
    """
    root_dir = base / "root"
    root_dir.mkdir()
    jupyter_home = base / "home"
    jupyter_home.mkdir()
    _copy_notebooks(root_dir)
    environment = _server_environment(jupyter_home)
    _write_config(Path(environment["JUPYTER_CONFIG_DIR"]), disabled_extensions)

    port = free_port()
    token = secrets.token_hex(24)
    command = _lab_command(port, token, root_dir)
    log_path = base / "jupyterlab.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=root_dir, env=environment, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LabServer(url=f"http://{LOOPBACK}:{port}", token=token, root_dir=root_dir, process=process, log_path=log_path)
    try:
        _wait_until_ready(server, timeout_s)
    except BaseException:
        stop_lab_server(server)
        raise
    return server


def stop_lab_server(server: LabServer) -> None:
    """Stop the server, its kernels and any other descendant.

    SIGTERM lets the server shut its kernels down; whatever still runs after
    the grace period is killed. Kernels run in their own process groups, so
    they are collected by pid before the server goes.
    """
    process = server.process
    if process.poll() is not None:
        return
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("JupyterLab (pid %d) ignored SIGTERM for %d s; killing it", process.pid, SERVER_STOP_TIMEOUT_S)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)
    _, alive = psutil.wait_procs(descendants, timeout=SERVER_STOP_TIMEOUT_S)
    for leftover in alive:
        log.warning("killing process %d left behind by JupyterLab", leftover.pid)
        leftover.kill()
