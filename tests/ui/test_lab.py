"""JupyterLab as researchers use it, in a real headless Chromium: the explorer (notebook 60) and the
analysis (notebook 50) on the smoke pipeline's results, and a training notebook run from its first
cell. Each test asserts what a person sees in the page and saves screenshots under reports/ui/."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
from lab_support import IMAGES, NotebookPage, count_colour, decode_image

from fsadlib.viz import OUTLINE_COLOUR

LIME = tuple(int(OUTLINE_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
CONTROLS = ("data set", "category", "method A", "method B", "k", "seed")


def test_lab_serves_the_notebooks_with_the_project_kernel(lab):
    specs = lab.api("kernelspecs")
    python = Path(specs["kernelspecs"][specs["default"]]["spec"]["argv"][0])
    assert specs["default"] == "python3" and python.parent.resolve() == Path(sys.executable).parent.resolve()
    names = {item["name"] for item in lab.api("contents")["content"]}
    assert {"50_ablation_analysis.ipynb", "60_explore_anomaly_maps.ipynb"} <= names   # root = notebooks/


def assert_ran_cleanly(notebook: NotebookPage) -> None:
    prompts = notebook.prompts()
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), f"cells not run: {prompts}"
    assert notebook.errors() == []


def test_explorer_notebook(page, lab, screenshots):
    notebook = NotebookPage(page, lab, "60_explore_anomaly_maps.ipynb")
    notebook.run_all()
    assert_ran_cleanly(notebook)
    for label in CONTROLS:
        assert notebook.dropdown(label).count() == 1, f"no '{label}' control"
    notebook.output_images().last.wait_for()

    def shown_after(select, value: str) -> np.ndarray:
        """Choose ``value`` in ``select``; the explorer's figure [H, W, 3] once the page shows it."""
        before = notebook.output_images().last.get_attribute("src")
        if select.input_value() != value:
            select.select_option(value)
            page.wait_for_function(f"old => {{ const img = [...document.querySelectorAll({IMAGES!r})].pop(); "
                                   "return img !== undefined && img.src !== old; }", arg=before, timeout=60_000)
        return decode_image(notebook.output_images().last.get_attribute("src"))

    images = notebook.dropdown("image")
    paths = images.locator("option").all_inner_texts()
    anomalous = next(p for p in paths if "/test/" in p and "/good/" not in p)
    normal = next(p for p in paths if "/good/" in p)
    outlined = shown_after(images, anomalous)
    assert count_colour(outlined, LIME) > 50, "the mask outline is not drawn on an anomalous image"
    plain = shown_after(images, normal)
    assert count_colour(plain, LIME) == 0, "an outline is drawn on a normal image"
    assert plain.shape[1] > 3 * plain.shape[0], "expected the image, two maps and their difference side by side"

    categories = notebook.dropdown("category")
    other = next(c for c in categories.locator("option").all_inner_texts() if c != categories.input_value())
    changed = shown_after(categories, other)
    assert f"/{other}/" in images.input_value() and not np.array_equal(changed, plain)
    anomalous = [p for p in images.locator("option").all_inner_texts() if "/good/" not in p]
    shown_after(images, next((p for p in anomalous if "/hole/" in p), anomalous[0]))   # for the README
    assert notebook.errors() == []
    notebook.panel.locator(".jp-OutputArea-output").last.screenshot(path=screenshots / "explorer.png")
    page.screenshot(path=screenshots / "explorer_lab.png")


def test_analysis_notebook_shows_its_figures(page, lab, screenshots):
    notebook = NotebookPage(page, lab, "50_ablation_analysis.ipynb")
    notebook.run_all()
    assert_ran_cleanly(notebook)
    figures = notebook.output_images()
    assert figures.count() >= 2, "expected the heat maps and the metric-vs-k figure"
    for i in range(figures.count()):
        figures.nth(i).scroll_into_view_if_needed()
        width, height = figures.nth(i).evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert width > 200 and height > 100, f"figure {i} is {width}x{height} px"
    figures.nth(0).screenshot(path=screenshots / "analysis_heatmaps.png")
    figures.nth(1).screenshot(path=screenshots / "analysis_metric_vs_k.png")
    page.screenshot(path=screenshots / "analysis_lab.png", full_page=True)


def test_training_notebook_runs_from_its_first_cell(page, lab, ui_workbench, screenshots):
    """As a person does: set ``smoke = 1`` in the parameters cell, Run All; the working directory is
    notebooks/ and no FSAD_ROOT is set, so the model lands in the notebook's own checkout (its
    models/ or, outside DVC, an output root under it: fsadlib.paths.use_output_root)."""
    root, _ = ui_workbench
    notebook = NotebookPage(page, lab, "32_train_kag_prompt.ipynb")
    notebook.set_cell_text(0, "smoke = 1\ntarget = \"\"\noutput_root = \"\"")
    notebook.run_all()
    assert_ran_cleanly(notebook)
    bars = notebook.panel.locator(".jp-OutputArea-output .widget-hprogress")
    assert bars.count() >= 1, "training shows no progress bar widget"
    done = notebook.panel.locator(".jp-OutputArea-output .widget-hbox").filter(
        has=page.locator(".widget-hprogress")).first.inner_text()
    counts = re.search(r"(\d+)/(\d+)", done)
    assert counts and counts[1] == counts[2], f"the progress bar is not complete: {done!r}"
    assert [p for p in root.rglob("final.pt") if "kag_prompt" in p.parts], f"no KAG-prompt model under {root}"
    assert notebook.output_images().count() >= 1, "no training curves shown"
    page.screenshot(path=screenshots / "training_lab.png")
