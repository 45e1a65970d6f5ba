"""Drive one notebook in JupyterLab through Playwright: open it, run it, inspect widgets, move sliders.

The state of the notebook (execution counts, outputs, kernel status) is read
from JupyterLab's own models through ``window.jupyterapp``, which the test
server exposes. What the page displays (rendered widgets, error placeholders,
slider handles, printed values) is read from the page itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

    from lab_server import LabServer

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# JavaScript helper, defined in the page once: find the open notebook panel for a path.
_FIND_PANEL = """
window.__dclabPanel = (path) => {
    const app = window.jupyterapp;
    if (!app) { return null; }
    for (const widget of app.shell.widgets('main')) {
        if (widget.context && widget.context.path === path && widget.content && widget.content.widgets) {
            return widget;
        }
    }
    return null;
};
"""

# True once the notebook is loaded and its kernel is idle.
_READY = """
(path) => {
    const panel = window.__dclabPanel && window.__dclabPanel(path);
    if (!panel || !panel.context.isReady) { return false; }
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    return Boolean(kernel) && kernel.status === 'idle';
}
"""

# A summary of the run: which code cells ran, which are still queued or
# running, the error outputs, and the kernel's status.
_RUN_STATE = """
(path) => {
    const panel = window.__dclabPanel(path);
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    const state = {kernel: kernel ? kernel.status : 'none', unexecuted: [], running: [], errors: [], cells: 0};
    panel.content.widgets.forEach((cell, index) => {
        if (cell.model.type !== 'code' || cell.model.sharedModel.getSource().trim() === '') { return; }
        state.cells += 1;
        if (cell.model.executionCount === null) { state.unexecuted.push(index); }
        const prompt = cell.node.querySelector('.jp-InputPrompt');
        if (prompt && prompt.textContent.includes('*')) { state.running.push(index); }
        const outputs = cell.model.outputs;
        for (let i = 0; i < outputs.length; i++) {
            const output = outputs.get(i).toJSON();
            if (output.output_type === 'error') {
                state.errors.push({cell: index, ename: output.ename, evalue: output.evalue});
            }
        }
    });
    return state;
}
"""

# Problems visible in the rendered page: tracebacks on stderr (also inside
# Output widgets), widget error placeholders, and widgets still loading. A
# widget output that no widget view rendered is one too, because a missing or
# mismatched widget extension shows the text/plain fallback instead. A cell's
# output area contains one child per output of its model, in order.
_PAGE_PROBLEMS = """
([path, widgetMime]) => {
    const panel = window.__dclabPanel(path);
    const problems = [];
    for (const node of panel.node.querySelectorAll('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')) {
        if (node.textContent.includes('Traceback')) {
            problems.push('traceback on stderr: ' + node.textContent.slice(0, 400));
        }
    }
    for (const node of panel.node.querySelectorAll('.jp-OutputArea-output')) {
        const text = node.textContent;
        if (text.includes('Error displaying widget')) { problems.push('widget error: ' + text.slice(0, 200)); }
        if (text.includes('Loading widget...')) { problems.push('widget still loading: ' + text.slice(0, 200)); }
    }
    for (const node of panel.node.querySelectorAll('.jupyter-widgets-error-widget')) {
        problems.push('widget error placeholder: ' + node.textContent.slice(0, 200));
    }
    let widgets = 0;
    panel.content.widgets.forEach((cell, index) => {
        if (cell.model.type !== 'code') { return; }
        const children = cell.node.querySelectorAll('.jp-Cell-outputArea > .jp-OutputArea-child');
        const outputs = cell.model.outputs;
        for (let i = 0; i < outputs.length; i++) {
            if (outputs.get(i).data[widgetMime] === undefined) { continue; }
            widgets += 1;
            const view = children[i] && children[i].querySelector('.jp-OutputArea-output');
            if (!view || !view.querySelector('.jupyter-widgets')) {
                const shown = view ? view.textContent.slice(0, 200) : 'nothing';
                problems.push(`cell ${index}: widget output ${i} not rendered as a widget; the page shows: ${shown}`);
            }
        }
    });
    return {problems: problems, widgets: widgets};
}
"""


@dataclass
class RunState:
    """The outcome of running a notebook's cells, read from JupyterLab's models."""

    kernel: str
    cells: int
    unexecuted: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Whether every non-empty code cell ran and the kernel is idle again."""
        return self.kernel == "idle" and not self.unexecuted and not self.running


class LabNotebook:
    """One notebook open in a JupyterLab tab.

    Args:
        page: a Playwright page (a fresh tab).
        server: the JupyterLab server serving the notebook.
        path: the notebook's path relative to the server's root, with '/' separators.
    """

    def __init__(self, page: Page, server: LabServer, path: str) -> None:
        self.page = page
        self.server = server
        self.path = path

    def open(self, timeout_s: float) -> None:
        """Load JupyterLab with the notebook and wait until its kernel is idle.

        Raises:
            playwright.sync_api.TimeoutError: JupyterLab, the notebook or its kernel was not ready in time.
        """
        # "reset" drops the saved workspace, so notebooks that earlier tests opened (and their kernels) stay closed.
        self.page.goto(f"{self.server.url}/lab/tree/{self.path}?reset&token={self.server.token}")
        self.page.wait_for_function("() => window.jupyterapp !== undefined", timeout=timeout_s * 1000)
        self.page.evaluate("async () => { await window.jupyterapp.restored; }")
        self.page.evaluate(_FIND_PANEL)
        self.page.wait_for_function(_READY, arg=self.path, timeout=timeout_s * 1000)
        self.page.evaluate(
            "(path) => window.jupyterapp.shell.activateById(window.__dclabPanel(path).id)", self.path
        )
        # Collapse the side panels so screenshots show the notebook at full width.
        self.page.evaluate("() => { window.jupyterapp.shell.collapseLeft(); window.jupyterapp.shell.collapseRight(); }")

    def run_all(self, timeout_s: float) -> RunState:
        """Clear the stored outputs, run all cells (Run > Run All Cells) and wait until the run ends.

        Clearing first resets every execution count, so a cell counts as run
        only when this run executed it. A run ends when every code cell ran
        and the kernel is idle, or as soon as a cell shows an error.

        Returns:
            The final :class:`RunState`; the caller asserts on it.

        Raises:
            playwright.sync_api.TimeoutError: the run did not end within ``timeout_s``.
        """
        self.page.evaluate(
            """async () => {
                const commands = window.jupyterapp.commands;
                await commands.execute('notebook:clear-all-cell-outputs');
                await commands.execute('notebook:run-all-cells');
            }"""
        )
        ended = f"""(path) => {{
            const state = ({_RUN_STATE})(path);
            const done = state.kernel === 'idle' && state.unexecuted.length === 0 && state.running.length === 0;
            return done || state.errors.length > 0 || state.kernel === 'dead';
        }}"""
        self.page.wait_for_function(ended, arg=self.path, timeout=timeout_s * 1000, polling=500)
        return self.run_state()

    def run_state(self) -> RunState:
        """Read the current :class:`RunState`."""
        return RunState(**self.page.evaluate(_RUN_STATE, self.path))

    def page_problems(self) -> tuple[list[str], int]:
        """Return the problems visible in the page (see ``_PAGE_PROBLEMS``) and the number of widget outputs."""
        report = self.page.evaluate(_PAGE_PROBLEMS, [self.path, WIDGET_MIME])
        return report["problems"], report["widgets"]

    def wait_for_widgets(self, timeout_s: float) -> list[str]:
        """Wait until no widget shows "Loading widget..." any more; return the remaining page problems."""
        self.page.wait_for_function(
            """() => !Array.from(document.querySelectorAll('.jp-OutputArea-output'))
                       .some((node) => node.textContent.includes('Loading widget...'))""",
            timeout=timeout_s * 1000,
        )
        problems, _ = self.page_problems()
        return problems

    def slider(self, description: str, within: Locator | None = None) -> Locator:
        """Return the ipywidgets slider whose description label is exactly ``description``.

        Args:
            description: the label shown left of the slider.
            within: search only inside this element (a cell's output, say); the whole page when None.

        Raises:
            AssertionError: no slider or several sliders carry that description.
        """
        scope = within if within is not None else self.page
        sliders = scope.locator(".widget-slider").filter(has=self.slider_label(description))
        count = sliders.count()
        labels = scope.locator(".widget-slider .widget-label").all_inner_texts()
        assert count == 1, f"expected one slider labelled {description!r}, found {count}; slider labels: {labels}"
        return sliders

    def slider_label(self, description: str) -> Locator:
        """Return a locator of the slider labels that read exactly ``description``."""
        return self.page.locator(".widget-label").filter(has_text=re.compile(rf"^\s*{re.escape(description)}\s*$"))

    def slider_readout(self, slider: Locator) -> str:
        """Return the value the slider shows next to it, as displayed (e.g. ``0.020``)."""
        return slider.locator(".widget-readout").inner_text().strip()

    def press_slider_key(self, slider: Locator, key: str, times: int = 1) -> str:
        """Focus the slider's handle, press ``key`` (ArrowRight, End, ...) ``times`` times; return the new readout.

        noUiSlider, which draws ipywidgets' sliders, moves the handle by one
        step per arrow key and to the ends with Home and End, as a user's keyboard does.
        """
        before = self.slider_readout(slider)
        handle = slider.locator(".noUi-handle")
        handle.focus()
        for _ in range(times):
            handle.press(key)
        readout = slider.locator(".widget-readout")
        self.page.wait_for_function("([node, old]) => node.textContent.trim() !== old", arg=[readout.element_handle(), before])
        return self.slider_readout(slider)

    def wait_for_idle(self, timeout_s: float) -> None:
        """Wait until the notebook's kernel is idle, for example after a slider update has finished drawing."""
        self.page.wait_for_function(_READY, arg=self.path, timeout=timeout_s * 1000)

    def cell_output(self, widget: Locator) -> Locator:
        """Return the output area of the cell that displays ``widget`` (a slider, say)."""
        return self.page.locator(".jp-Cell-outputArea").filter(has=widget)

    def wait_for_texts(self, container: Locator, expected: list[str], timeout_s: float) -> str:
        """Wait until ``container`` shows every string of ``expected``; return the text it shows at the end.

        Returns the last text also on timeout, so the caller's assertion can show both.
        """
        from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

        handle = container.element_handle()
        try:
            self.page.wait_for_function(
                "([node, texts]) => texts.every((text) => node.innerText.includes(text))",
                arg=[handle, expected],
                timeout=timeout_s * 1000,
            )
        except PlaywrightTimeoutError:
            pass  # the caller's assertion compares the text shown with the one expected
        return container.inner_text()

    def screenshot(self, target: Locator, path: Path) -> Path:
        """Scroll the cell holding ``target`` to the top of the notebook and save a screenshot of the window to ``path``."""
        # Make that cell the active one first: JupyterLab scrolls back to the active cell after a run.
        target.evaluate(
            """async (node, path) => {
                const notebook = window.__dclabPanel(path).content;
                const index = notebook.widgets.findIndex((cell) => cell.node.contains(node));
                notebook.activeCellIndex = index;
                await notebook.scrollToItem(index, 'start');
            }""",
            self.path,
        )
        self.page.wait_for_timeout(500)  # one more layout pass after the scroll
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))
        return path
