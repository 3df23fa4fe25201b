"""fsadlib.viz: figures from fake runs with known numbers; overlays; the explorer built headless."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from fsadlib.analysis import experiments_table, load_runs
from fsadlib.viz import (
    METHOD_COLOURS,
    ablation_curve,
    category_heatmaps,
    category_range,
    draw_overlay,
    efficiency_plot,
    method_colour,
    method_palette,
    metric_vs_k,
    normalise,
    resample_map,
    save_figure,
)
from fsadlib.viz.explorer import SORTS, Explorer, score_difference


def test_heatmaps_show_seed_means_per_category(fake_runs):
    fig = category_heatmaps(load_runs(fake_runs), "synthetic", metrics=("image_auroc", "pixel_auroc"))
    assert len(fig.axes) == 2                                  # no run reports pixel_auroc: one row, 2 methods
    inctrl, winclip = fig.axes
    # inctrl facet: rows a, b, mean x columns k2, k4; winclip facet: k0 (seed means: a 70, b 90, mean 80)
    assert [t.get_text() for t in inctrl.texts] == ["62.0", "72.0", "62.0", "72.0", "62.0", "72.0"]
    assert [t.get_text() for t in winclip.texts] == ["70.0", "90.0", "80.0"]
    assert [t.get_text() for t in inctrl.get_xticklabels()] == ["k2", "k4"]
    assert [t.get_text() for t in inctrl.get_yticklabels()] == ["a", "b", "mean"] and not winclip.get_yticklabels()
    assert inctrl.title.get_text() == "inctrl\nimage_auroc" and to_hex(inctrl.title.get_color()) == method_colour("inctrl")
    with pytest.raises(ValueError, match="no runs of dataset 'visa'"):
        category_heatmaps(load_runs(fake_runs), "visa")


def test_heatmap_annotations_stay_inside_their_cells():
    """Every method x k of a full MVTec-sized study (6 methods, 1-4 k each, 15 categories, 3 metrics):
    each annotation is drawn inside its own cell (so none overlaps another) at a readable size."""
    methods = {"winclip": [0], "winclip_plus": [1, 2, 4, 8], "inctrl": [1, 2, 4, 8], "kag_prompt": [1, 2, 4, 8],
               "bayes_pfl": [0], "finegrained": [1, 2, 4, 8]}
    rows = [{"method": m, "dataset": "mvtec", "k": k, "seed": s, "category": f"category_{c:02d}", "metric": metric,
             "value": 1.0}
            for m, ks in methods.items() for k in ks for s in range(3) for c in range(15)
            for metric in ("image_auroc", "pixel_auroc", "pixel_aupro")]
    fig = category_heatmaps(pd.DataFrame(rows), "mvtec")
    assert len(fig.axes) == 3 * 6
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    n_texts = 0
    for ax in fig.axes:
        for text in ax.texts:
            assert text.get_text() == "100.0" and text.get_fontsize() >= 8
            x, y = text.get_position()                          # the cell centre, in data units
            cell = ax.transData.transform([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)])
            box = text.get_window_extent(renderer)
            assert cell[:, 0].min() < box.x0 and box.x1 < cell[:, 0].max(), (ax.get_title(), x, y)
            assert cell[:, 1].min() < box.y0 and box.y1 < cell[:, 1].max(), (ax.get_title(), x, y)
            n_texts += 1
    assert n_texts == 3 * 16 * sum(len(ks) for ks in methods.values())


def test_each_method_keeps_its_colour_in_every_figure(fake_runs):
    assert method_palette(["inctrl", "winclip", "inctrl"]) == {"inctrl": METHOD_COLOURS["inctrl"],
                                                              "winclip": METHOD_COLOURS["winclip"]}
    assert len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)
    outside = method_colour("my_lab_method")                     # a method from an outside package
    assert outside == method_colour("my_lab_method") and outside not in METHOD_COLOURS.values()
    fig = metric_vs_k(load_runs(fake_runs), "synthetic")
    colours = {line.get_label(): to_hex(line.get_color()) for line in fig.axes[0].get_legend().get_lines()}
    assert colours == {"inctrl": METHOD_COLOURS["inctrl"], "winclip": METHOD_COLOURS["winclip"]}
    table = pd.DataFrame({"method": ["winclip", "inctrl"], "ms_per_img_b1": [3.0, 5.0], "img_per_s_best": [9.0, 4.0],
                          "device": ["cpu", "cpu"]})
    for ax in efficiency_plot(table).axes:
        bars = sorted(ax.patches, key=lambda p: p.get_y())      # y order = table order: winclip, inctrl
        assert [to_hex(p.get_facecolor()) for p in bars] == [METHOD_COLOURS["winclip"], METHOD_COLOURS["inctrl"]]


def test_metric_vs_k_plots_seed_mean_and_spread(fake_runs, tmp_path):
    fig = metric_vs_k(load_runs(fake_runs), "synthetic")
    line = next(l for l in fig.axes[0].lines if len(l.get_xdata()) == 2)      # inctrl over k = 2, 4
    assert list(line.get_xdata()) == [2, 4] and list(line.get_ydata()) == pytest.approx([62.0, 72.0])
    path = save_figure(fig, "vs_k", tmp_path)
    assert path.stat().st_size > 0 and Image.open(path).format == "PNG"


def _experiments(rows):
    """experiments_table of records ``(name, params, {k: (mean, std)})`` of kag_prompt image AUROC."""
    return experiments_table([
        {"name": name, "rev": name, "baseline": "main", "params": params,
         "summary": {"kag_prompt": {"synthetic": {f"k{k}": {"image_auroc": {"mean": m, "std": s}}
                                                  for k, (m, s) in stats.items()}}}}
        for name, params, stats in rows])


def test_ablation_curve_reads_experiments():
    table = _experiments([(f"e{r}", {"kag_prompt.model.rounds": r}, {1: (0.5 + r / 10, 0.01), 2: (0.9, 0.02)})
                          for r in (3, 1, 2)])
    fig = ablation_curve(table, "kag_prompt.model.rounds", ["kag_prompt"])
    k1, k2 = (c.lines[0] for c in fig.axes[0].containers)            # one error-bar line per k
    assert [c.get_label() for c in fig.axes[0].containers] == ["kag_prompt k=1", "kag_prompt k=2"]
    assert list(k1.get_xdata()) == [1, 2, 3] and list(k1.get_ydata()) == pytest.approx([60.0, 70.0, 80.0])
    assert list(k2.get_ydata()) == pytest.approx([90.0] * 3)
    assert list(fig.axes[0].get_xticks()) == [1, 2, 3]                  # integer ticks, no 1.5
    with pytest.raises(KeyError, match="kag_prompt.model.kernels"):
        ablation_curve(table, "kag_prompt.model.kernels", ["kag_prompt"])


def test_ablation_curve_holds_the_other_varied_parameter_fixed():
    rows = [(f"r{r}f{f}", {"kag_prompt.model.rounds": r, "kag_prompt.model.flag": f}, {1: (r / 10 + f / 2, 0.0)})
            for r in (1, 2) for f in (0, 1)]
    fig = ablation_curve(_experiments(rows), "kag_prompt.model.rounds", ["kag_prompt"])
    assert [ax.get_title() for ax in fig.axes] == ["kag_prompt.model.flag=0", "kag_prompt.model.flag=1"]
    assert [list(ax.containers[0].lines[0].get_ydata()) for ax in fig.axes] == [pytest.approx([10.0, 20.0]),
                                                                  pytest.approx([60.0, 70.0])]
    flag = ablation_curve(_experiments(rows), "kag_prompt.model.flag", ["kag_prompt"])
    assert [list(ax.get_xticks()) for ax in flag.axes] == [[0, 1], [0, 1]]


def test_normalise_and_overlay_contour():
    maps = np.array([[[1.0, 3.0]], [[5.0, 2.0]]])
    lo, hi = category_range(maps)
    assert (lo, hi) == (1.0, 5.0)
    assert normalise(maps[0], lo, hi).tolist() == [[0.0, 0.5]] and normalise(maps[0], 2.0, 2.0).tolist() == [[0.0, 0.0]]
    fig = matplotlib.figure.Figure()
    ax = fig.subplots()
    mask = np.zeros((8, 8))
    mask[2:5, 2:5] = 1
    draw_overlay(ax, np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 0.25), mask)
    assert len(ax.images) == 2 and ax.images[1].get_array().max() == 0.25 and len(ax.collections) == 1
    assert ax.collections[0].get_edgecolor()[0].tolist() == [0.0, 1.0, 0.0, 1.0]   # lime outline
    with pytest.raises(ValueError, match="differ in size"):
        draw_overlay(ax, np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4)))


@pytest.mark.parametrize("size", [12, 3])
def test_resample_map_is_bilinear_with_aligned_pixel_centres(size):
    """Reference: torch's bilinear interpolation, align_corners=False (antialiased when shrinking)."""
    import torch
    import torch.nn.functional as F

    amap = np.random.default_rng(0).random((5, 5)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(amap)[None, None], size=(size, size), mode="bilinear",
                             align_corners=False, antialias=size < 5)[0, 0].numpy()
    assert resample_map(amap, size) == pytest.approx(expected, abs=1e-5)
    assert resample_map(amap, 5) is not None and (resample_map(amap, 5) == amap).all()
    with pytest.raises(ValueError, match="expected a map"):
        resample_map(np.zeros((2, 4, 4)), 8)


@pytest.fixture
def saved_results(tmp_path, write_run):
    """winclip (k0, maps 8 x 8) and inctrl (k2, maps 16 x 16: another evaluation resolution) runs on 3
    real PNG images of category 'a', with maps and masks. Map of an image with score s: s + a ramp
    from 0 to 1 over the pixels in row-major order."""
    rng = np.random.default_rng(0)
    rows = []
    for name, label in (("good", 0), ("bad1", 1), ("bad2", 1)):
        image = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(image)
        mask = ""
        if label:
            m = np.zeros((16, 16), np.uint8)
            m[4:10, 4:10] = 255
            mask = str(tmp_path / f"{name}_mask.png")
            Image.fromarray(m).save(mask)
        rows.append({"dataset": "synthetic", "category": "a", "split": "test", "label": label,
                     "defect": "hole" if label else "good", "image_path": str(image), "mask_path": mask})
    samples = pd.DataFrame(rows)
    root = tmp_path / "results"
    for method, k, scores, size in (("winclip", 0, [0.1, 0.5, 0.9], 8), ("inctrl", 2, [0.2, 0.8, 0.4], 16)):
        table = samples.assign(score=scores)
        maps = np.stack([np.full((size, size), s) for s in scores]) + np.linspace(0, 1, size * size).reshape(1, size, size)
        write_run(root, method, "synthetic", k, 0, {"a": {"image_auroc": 1.0}}, scores=table, maps={"a": maps})
    return root, samples


def test_score_difference_normalises_each_method(saved_results):
    _, samples = saved_results
    a = samples.assign(score=[0.1, 0.5, 0.9])
    b = samples.assign(score=[0.2, 0.8, 0.4])
    diff = score_difference(a, b)
    assert diff.tolist() == pytest.approx([0.0, -0.5, 2 / 3])
    with pytest.raises(KeyError, match="different images"):
        score_difference(a, b.iloc[:2])


def test_explorer_headless(saved_results):
    root, samples = saved_results
    explorer = Explorer(root, samples=samples)
    assert explorer.method_a.options == ("inctrl", "winclip") and explorer.category.value == "a"
    explorer.method_a.value = "winclip"
    explorer.method_b.value = "inctrl"
    assert explorer.k.options == (0,) and explorer.run_k("inctrl") == 2          # nearest k of B
    explorer.sort.value = SORTS[2]                                                # A - B, largest first
    names = [p.rsplit("/", 1)[-1] for p in explorer.image.options]
    assert names == ["bad2.png", "good.png", "bad1.png"]
    fig = explorer.figure
    axes = fig.axes
    assert len(axes) == 4 and axes[1].get_title() == "winclip k0: score 0.9" and axes[2].get_title() == "inctrl k2: score 0.4"
    assert len(axes[0].collections) == 1                                          # ground-truth contour of bad2
    shown = axes[1].images[1].get_array()
    # per-category range over both images' maps: lo = 0.1 (good), hi = 1.9 (bad2) -> bad2 spans [0.8, 1.8] / 1.8
    assert shown.min() == pytest.approx(0.8 / 1.8, abs=2e-3) and shown.max() == pytest.approx(1.0, abs=2e-3)
    # both maps on the display image (D = DISPLAY_MIN_SIZE = 256): the 8 x 8 and the 16 x 16 map resampled
    assert [ax.images[0].get_array().shape[:2] for ax in axes] == [(256, 256)] * 4
    ramp = {n: np.linspace(0, 1, n * n, dtype=np.float32).reshape(n, n) for n in (8, 16)}
    a = resample_map((0.9 + ramp[8] - 0.1) / 1.8, 256)                       # winclip: lo 0.1, hi 1.9
    b = resample_map((0.4 + ramp[16] - 0.2) / 1.6, 256)                      # inctrl: lo 0.2, hi 1.8
    np.testing.assert_allclose(axes[3].images[1].get_array(), a - b, atol=2e-3)   # float16 maps on disk
    png = Image.open(io.BytesIO(explorer.png().data))
    assert png.format == "PNG" and png.size == (1300, 360)
    explorer.image.value = explorer.image.options[1]                              # the normal image: no contour
    assert len(explorer.figure.axes[0].collections) == 0 and "label 0" in explorer.figure.axes[0].get_title()
    explorer.sort.value = SORTS[3]
    assert [p.rsplit("/", 1)[-1] for p in explorer.image.options] == ["bad1.png", "good.png", "bad2.png"]


def test_explorer_without_results_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        Explorer(tmp_path)


def test_ablation_curves_one_per_varied_param():
    from fsadlib.viz import ablation_curves

    table = _experiments([(f"e{r}", {"kag_prompt.model.rounds": r, "shots.seeds": "[0, 1, 2]",
                                     "evaluations.kag_prompt.ks": "[1, 2]"[: 2 + 3 * (r % 2)]}, {1: (0.5, 0.0)})
                          for r in (1, 2)])
    assert sorted(ablation_curves(table)) == ["evaluations.kag_prompt.ks", "kag_prompt.model.rounds"]


def test_ablation_curves_draw_a_section_key_for_every_method_of_its_folder():
    from fsadlib.viz import ablation_curves

    table = experiments_table([
        {"name": f"e{t}", "rev": f"e{t}", "baseline": "main", "params": {"winclip.model.temperature": t},
         "summary": {m: {"synthetic": {f"k{k}": {"image_auroc": {"mean": 0.5 + t + k / 10, "std": 0.0}}}}
                     for m, k in (("winclip", 0), ("winclip_plus", 1), ("inctrl", 2))}}
        for t in (0.05, 0.1)])
    (ax,) = ablation_curves(table)["winclip.model.temperature"].axes
    assert [c.get_label() for c in ax.containers] == ["winclip k=0", "winclip_plus k=1"]   # not InCTRL
    assert list(ax.containers[1].lines[0].get_ydata()) == pytest.approx([65.0, 70.0])
