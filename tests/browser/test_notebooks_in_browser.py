"""The notebooks in JupyterLab in headless Chromium, as students use them: widgets rendered and responding.

Each test opens a notebook from a temporary copy, runs all cells through
JupyterLab's Run All command, checks that no cell shows an error and that
every widget rendered, moves a slider with the keyboard and compares the
values the page then shows with the ones dclab computes in this process.
Screenshots go to ``test-artifacts/browser`` (see conftest.py).
"""

from __future__ import annotations

import copy
import os
import re
import socket
import urllib.error
import urllib.request

import psutil
import pytest
import torch

from dclab.data import load_mnist, make_loader
from dclab.models import build_model, compressible_layers
from dclab.prune import enforce_masks, layer_mask, prune_layer, prune_to_preset
from dclab.train import evaluate, set_seed, train
from dclab.widgets import LectureSetup, lecture_setup

# Helper modules beside this file; pytest puts this folder on sys.path.
from expected_values import Expected, expected_pruning, expected_weight_sharing
from lab_notebook import LabNotebook
from lab_server import LOOPBACK, LabServer, listening_addresses, notebooks_dir, start_lab_server, stop_lab_server

pytestmark = pytest.mark.browser

# Bounds on the waits (seconds). Running a lecture notebook in quick mode on
# a shared 2-core machine takes minutes; DCLAB_BROWSER_RUN_TIMEOUT raises the bound.
OPEN_TIMEOUT_S = 180
RUN_TIMEOUT_S = float(os.environ.get("DCLAB_BROWSER_RUN_TIMEOUT", "900"))
WIDGET_TIMEOUT_S = 60
UPDATE_TIMEOUT_S = 120


def run_in_lab(page, server: LabServer, path: str) -> LabNotebook:
    """Open ``path`` in JupyterLab, run all cells and assert that it ran cleanly with every widget rendered."""
    notebook = LabNotebook(page, server, path)
    notebook.open(OPEN_TIMEOUT_S)
    state = notebook.run_all(RUN_TIMEOUT_S)
    raised = [f"cell {error['cell']}: {error['ename']}: {error['evalue']}" for error in state.errors]
    assert raised == [], f"{path}: cells raised errors"
    assert state.unexecuted == [], f"{path}: code cells that did not run"
    assert state.kernel == "idle"
    problems = notebook.wait_for_widgets(WIDGET_TIMEOUT_S)
    assert problems == [], f"{path}: problems visible in the page"
    return notebook


def lecture_notebook(pattern: str) -> str:
    """Return the server path of the one lecture notebook matching ``pattern`` under notebooks/."""
    matches = sorted(path.name for path in notebooks_dir().glob(pattern))
    assert len(matches) == 1, f"expected one notebook matching {notebooks_dir() / pattern}, found {matches}"
    return f"notebooks/{matches[0]}"


def assert_shows(notebook: LabNotebook, output, expected: Expected) -> None:
    """Wait until ``output`` shows every text of ``expected``; fail with the texts missing and the text shown."""
    texts = expected.texts()
    shown = notebook.wait_for_texts(output, texts, UPDATE_TIMEOUT_S)
    missing = [text for text in texts if text not in shown]
    assert missing == [], f"the page does not show {missing}; it shows:\n{shown}"
    # The readout changes before the figure is redrawn; let the update finish before a screenshot.
    notebook.wait_for_idle(UPDATE_TIMEOUT_S)


@pytest.fixture(scope="module")
def lenet300_lecture() -> LectureSetup:
    """The data and dense LeNet-300-100 that the lecture notebooks start from in quick mode."""
    return lecture_setup("lenet300", quick=True)


@pytest.fixture(scope="module")
def lenet300_retrained(lenet300_lecture) -> tuple[torch.nn.Module, float]:
    """LeNet-300-100 pruned to the paper's kept fractions and retrained for 2 epochs, and its test accuracy.

    This repeats the recipe of notebooks/03_weight_sharing.ipynb. CPU training
    with the same seed gives the same weights bit for bit (checked on torch
    2.14.1), and the test checks that the notebook printed the same accuracy
    before it compares any slider values.
    """
    model = copy.deepcopy(lenet300_lecture.model)
    prune_to_preset(model, "paper")
    set_seed(0)
    train_loader = make_loader(lenet300_lecture.splits.train, 64, shuffle=True)
    train(model, train_loader, epochs=2, lr=0.01, after_step=enforce_masks, progress=False)
    top1 = evaluate(model, make_loader(lenet300_lecture.splits.test, 1000))["top1"]
    return model, top1


@pytest.fixture(scope="module")
def lenet5_lecture() -> LectureSetup:
    """The data and dense LeNet-5 that the lecture notebooks start from in quick mode."""
    return lecture_setup("lenet5", quick=True)


def layer_bits(model: torch.nn.Module, conv: int | None, fc: int) -> dict[str, int]:
    """Map each layer to the bits of its type's slider (convolutional or fully connected)."""
    return {name: conv if name.startswith("conv") else fc for name in compressible_layers(model)}


# ---------------------------------------------------------------- the fixture notebook


@pytest.fixture(scope="module")
def lenet300_and_test_loader():
    """The shipped LeNet-300-100 and a loader over the bundled test images, as the fixture notebook builds them."""
    model = build_model("lenet300", weights="trained")
    return model, make_loader(load_mnist(source="bundled").test, batch_size=500)


def describe_threshold(model: torch.nn.Module, loader, threshold: float) -> str:
    """Return the line the fixture notebook prints for ``threshold``, computed here with dclab."""
    pruned = copy.deepcopy(model)
    layer = compressible_layers(pruned)["ip1"]
    prune_layer(layer, threshold=threshold)
    kept = layer_mask(layer).mean().item()
    top1 = evaluate(pruned, loader)["top1"]
    return f"threshold {threshold:.3f}: ip1 kept {kept:.4f}, top-1 {top1:.4f}"


def test_fixture_slider_updates(lab_page, lab_server, artifacts_dir, lenet300_and_test_loader):
    model, loader = lenet300_and_test_loader
    notebook = run_in_lab(lab_page, lab_server, "fixtures/slider_fixture.ipynb")
    slider = notebook.slider("threshold")
    output = notebook.cell_output(slider)
    assert notebook.slider_readout(slider) == "0.010"
    expected = describe_threshold(model, loader, 0.01)
    assert expected in notebook.wait_for_texts(output, [expected], UPDATE_TIMEOUT_S)

    readout = notebook.press_slider_key(slider, "ArrowRight", times=2)
    assert readout == "0.020"
    expected = describe_threshold(model, loader, 0.02)
    assert expected in notebook.wait_for_texts(output, [expected], UPDATE_TIMEOUT_S)
    notebook.screenshot(output, artifacts_dir / "slider_fixture.png")

    readout = notebook.press_slider_key(slider, "End")
    assert readout == "0.050"
    expected = describe_threshold(model, loader, 0.05)
    assert expected in notebook.wait_for_texts(output, [expected], UPDATE_TIMEOUT_S)
    assert notebook.page_problems()[0] == []


def test_missing_widget_extension_detected(browser_context, tmp_path):
    # What a student sees when the widget extension is missing: the kernel runs
    # every cell, but the page shows the widget's plain-text form.
    server = start_lab_server(tmp_path, disabled_extensions=["@jupyter-widgets/jupyterlab-manager"])
    page = browser_context.new_page()
    try:
        notebook = LabNotebook(page, server, "fixtures/slider_fixture.ipynb")
        notebook.open(OPEN_TIMEOUT_S)
        state = notebook.run_all(RUN_TIMEOUT_S)
        assert state.errors == []
        problems, widgets = notebook.page_problems()
    finally:
        page.close()
        stop_lab_server(server)
    assert widgets == 1
    assert len(problems) == 1
    assert "not rendered as a widget" in problems[0]
    assert "FloatSlider(" in problems[0]


def test_fixture_kernel_loopback_only(lab_page, lab_server):
    notebook = LabNotebook(lab_page, lab_server, "fixtures/slider_fixture.ipynb")
    notebook.open(OPEN_TIMEOUT_S)
    # The kernel now runs beside the server; every socket of both must listen on loopback only.
    addresses = listening_addresses(psutil.Process(lab_server.process.pid))
    assert len(addresses) >= 2, f"expected the server and a kernel, found processes {sorted(addresses)}"
    everything = [address for listening in addresses.values() for address in listening]
    assert everything, "no listening sockets found"
    assert set(everything) == {LOOPBACK}


# ---------------------------------------------------------------- the lecture notebooks


def test_pruning_notebook_sliders(lab_page, lab_server, artifacts_dir, lenet300_lecture):
    notebook = run_in_lab(lab_page, lab_server, lecture_notebook("02_*prun*.ipynb"))
    dense, splits = lenet300_lecture.model, lenet300_lecture.splits
    layers = list(compressible_layers(dense))

    # One slider sets s for every layer: threshold = s x the layer's standard deviation.
    slider = notebook.slider("s (threshold = s x std)")
    output = notebook.cell_output(slider)
    start = float(notebook.slider_readout(slider))
    before = expected_pruning(dense, splits, {name: {"s": start} for name in layers})
    assert_shows(notebook, output, before)

    s = float(notebook.press_slider_key(slider, "ArrowRight", times=2))
    assert s == pytest.approx(start + 0.10)
    after = expected_pruning(dense, splits, {name: {"s": s} for name in layers})
    assert after.texts() != before.texts()
    assert_shows(notebook, output, after)
    notebook.screenshot(output, artifacts_dir / "pruning-notebook.png")

    # One slider per layer sets the fraction of its weights pruned; move ip1's.
    slider = notebook.slider("ip1: pruned")
    output = notebook.cell_output(slider)
    amounts = {name: float(notebook.slider_readout(notebook.slider(f"{name}: pruned"))) for name in layers}
    before = expected_pruning(dense, splits, {name: {"amount": amount} for name, amount in amounts.items()})
    assert_shows(notebook, output, before)

    amounts["ip1"] = float(notebook.press_slider_key(slider, "End"))
    assert amounts["ip1"] == pytest.approx(0.99)
    after = expected_pruning(dense, splits, {name: {"amount": amount} for name, amount in amounts.items()})
    assert after.texts() != before.texts()
    assert_shows(notebook, output, after)
    assert notebook.page_problems()[0] == []


FC_BITS = "fc layers: bits per weight"
CONV_BITS = "conv layers: bits per weight"


def test_weight_sharing_notebook_sliders(lab_page, lab_server, artifacts_dir, lenet300_lecture, lenet300_retrained,
                                         lenet5_lecture):
    notebook = run_in_lab(lab_page, lab_server, lecture_notebook("03_*weight*shar*.ipynb"))
    retrained, retrained_top1 = lenet300_retrained
    printed = f"pruned and retrained {100 * retrained_top1:.2f}%"
    assert lab_page.locator(".jp-Cell-outputArea").filter(has_text=printed).count() == 1, (
        f"the notebook's starting model differs from the test's: it does not print {printed!r}"
    )

    # LeNet-300-100 has only fully connected layers, so its explorer has one slider.
    output = lab_page.locator(".jp-Cell-outputArea").filter(has=notebook.slider_label(FC_BITS)).filter(
        has_not=notebook.slider_label(CONV_BITS)
    )
    slider = notebook.slider(FC_BITS, within=output)
    start = int(notebook.slider_readout(slider))
    before = expected_weight_sharing(retrained, lenet300_lecture.splits, layer_bits(retrained, None, start))
    assert_shows(notebook, output, before)

    bits = int(notebook.press_slider_key(slider, "ArrowLeft"))
    assert bits == start - 1
    after = expected_weight_sharing(retrained, lenet300_lecture.splits, layer_bits(retrained, None, bits))
    assert after.texts() != before.texts()
    assert_shows(notebook, output, after)
    notebook.screenshot(output, artifacts_dir / "weight-sharing-notebook.png")

    # LeNet-5 has a slider for its convolutional layers and one for its fully connected layers.
    dense5 = lenet5_lecture.model
    output = lab_page.locator(".jp-Cell-outputArea").filter(has=notebook.slider_label(CONV_BITS))
    conv_slider = notebook.slider(CONV_BITS, within=output)
    fc_slider = notebook.slider(FC_BITS, within=output)
    conv, fc = int(notebook.slider_readout(conv_slider)), int(notebook.slider_readout(fc_slider))
    before = expected_weight_sharing(dense5, lenet5_lecture.splits, layer_bits(dense5, conv, fc))
    assert_shows(notebook, output, before)

    conv = int(notebook.press_slider_key(conv_slider, "Home"))
    assert conv == 1
    after = expected_weight_sharing(dense5, lenet5_lecture.splits, layer_bits(dense5, conv, fc))
    assert after.texts() != before.texts()
    assert_shows(notebook, output, after)
    assert notebook.page_problems()[0] == []


# Notebooks whose code builds widgets; nbval runs every notebook's code, so the
# browser adds most where something has to render.
WIDGET_SOURCE = re.compile(r"Explorer\(|ipywidgets|interact\(")
# The notebooks with their own tests above.
SLIDER_TESTED = ("02_*prun*.ipynb", "03_*weight*shar*.ipynb")


def other_widget_notebooks() -> list[str]:
    """Return the names of the lecture notebooks that build widgets and have no test of their own here."""
    folder = notebooks_dir()
    tested = {path.name for pattern in SLIDER_TESTED for path in folder.glob(pattern)}
    return [
        path.name
        for path in sorted(folder.glob("*.ipynb"))
        if path.name not in tested and WIDGET_SOURCE.search(path.read_text())
    ]


@pytest.mark.parametrize("name", other_widget_notebooks())
def test_widget_notebook_renders(lab_page, lab_server, artifacts_dir, name):
    notebook = run_in_lab(lab_page, lab_server, f"notebooks/{name}")
    assert notebook.page_problems()[1] > 0, f"{name} builds widgets but displays none"
    first_widget = lab_page.locator(".jp-Cell-outputArea .jupyter-widgets").filter(visible=True).first
    notebook.screenshot(first_widget, artifacts_dir / name.replace(".ipynb", ".png"))



# ---------------------------------------------------------------- the server and the browser


def test_server_listens_on_loopback(lab_server):
    addresses = listening_addresses(psutil.Process(lab_server.process.pid))
    server_addresses = addresses[lab_server.process.pid]
    assert server_addresses, "the server process listens on no TCP socket"
    assert set(server_addresses) == {LOOPBACK}
    status = lab_server.api("/api/status")
    assert "started" in status


def test_server_rejects_missing_token(lab_server):
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"{lab_server.url}/api/contents", timeout=10)
    assert raised.value.code == 403


def test_server_stop_ends_kernels(tmp_path):
    server = start_lab_server(tmp_path)
    try:
        kernel = server.api("/api/kernels", method="POST", body={"name": "python3"})
        assert kernel["name"]
        processes = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
        assert len(processes) >= 2, "the kernel process did not start"
    finally:
        stop_lab_server(server)
    assert server.process.poll() is not None
    assert [process.pid for process in processes if is_alive(process)] == []
    port = int(server.url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex((LOOPBACK, port)) != 0, f"port {port} still accepts connections"


def is_alive(process: psutil.Process) -> bool:
    """Return whether ``process`` still runs (a zombie does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def command_line(process: psutil.Process) -> str:
    """Return the command line of ``process``, or "" when it has exited meanwhile."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def test_chromium_headless_flags(browser_context):
    # The browser process has the profile switch; its helpers (renderer, GPU, ...) have --type=.
    chromium = [
        process
        for process in psutil.Process().children(recursive=True)
        if "--user-data-dir" in command_line(process) and "--type=" not in command_line(process)
    ]
    assert len(chromium) == 1, f"expected one Chromium browser process, found {[command_line(p)[:80] for p in chromium]}"
    arguments = chromium[0].cmdline()
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]:
        assert any(argument == flag or argument.startswith(flag + "=") for argument in arguments), flag
    listening = {pid: addresses for pid, addresses in listening_addresses(chromium[0]).items() if addresses}
    assert listening == {}, "Chromium should listen on no TCP port (Playwright talks to it through a pipe)"
