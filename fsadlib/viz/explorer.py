"""Interactive explorer over saved results (ipywidgets); it reads files and never runs a model.

    explorer = Explorer()                 # results/ of this checkout
    explorer.widget                       # display in Jupyter

Widgets: data set, category, method A, method B, k, seed, sort order, image. Each image is shown
four times side by side: the image with the ground-truth contour; A's map; B's map; and the
method-to-method difference d = m'_A - m'_B in [-1, 1] (red: A higher, blue: B higher), each map
normalised per (method, category) (:mod:`fsadlib.viz.overlay`). The display size is
D = max(E_A, E_B, DISPLAY_MIN_SIZE), E_A and E_B the two runs' map sizes: the image is resized
to [D, D] (bicubic, as the model input) and both maps are resampled to it
(:func:`fsadlib.viz.overlay.resample_map`), so methods evaluated at different resolutions compare
pixel by pixel. Panel titles are in each method's colour (:mod:`fsadlib.viz.palette`).

Sorting by "A - B" orders images by the difference of the two methods' image scores after min-max
normalising each method's scores over the category (d = s'_A - s'_B, largest first: where A is
more confident of an anomaly than B).

A method without the chosen k (a zero-shot method has only k = 0) is shown at its nearest k; the
panel title names the k used.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pandas as pd
from IPython.display import Image, display
from matplotlib.figure import Figure

from fsadlib.layout import run_dir, run_files
from fsadlib.paths import evaluated_results_dir
from fsadlib.viz.overlay import category_range, draw_overlay, normalise, resample_map, resize_image
from fsadlib.viz.palette import method_colour

DISPLAY_DPI = 100
DISPLAY_MIN_SIZE = 256  # px: small evaluation sizes are shown enlarged, not as a few coarse pixels
SORTS = ("path", "score A (high first)", "A - B (high first)", "B - A (high first)")


class ResultsIndex:
    """The saved runs under ``root`` (``<method>/<dataset>/k<k>/seed<s>/scores.csv``) and their files."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else evaluated_results_dir()
        rows = [dataclasses.asdict(key) for key, _ in run_files(self.root, "scores.csv")]
        self.runs = pd.DataFrame(rows, columns=["method", "dataset", "k", "seed"])
        if self.runs.empty:
            raise FileNotFoundError(f"no saved results under {self.root} (expected <method>/<dataset>/k<k>/"
                                    "seed<s>/scores.csv; run the evaluate stage)")
        self._cache: dict[tuple, object] = {}

    def choices(self, column: str, **where: object) -> list:
        """Sorted distinct values of ``column`` among runs matching ``where``."""
        runs = self.runs
        for key, value in where.items():
            runs = runs[runs[key] == value]
        return sorted(runs[column].unique().tolist())

    def nearest_k(self, method: str, dataset: str, k: int) -> int:
        ks = self.choices("k", method=method, dataset=dataset)
        if not ks:
            raise KeyError(f"no runs of method '{method}' on dataset '{dataset}'")
        return min(ks, key=lambda v: (abs(v - k), v))

    def folder(self, method: str, dataset: str, k: int, seed: int) -> Path:
        return run_dir(method, dataset, k, seed, self.root)

    def table(self, method: str, dataset: str, k: int, seed: int) -> pd.DataFrame:
        """The run's ``scores.csv`` (image_path, category, defect, label, score)."""
        key = ("scores", method, dataset, k, seed)
        if key not in self._cache:
            self._cache[key] = pd.read_csv(self.folder(method, dataset, k, seed) / "scores.csv", keep_default_na=False)
        return self._cache[key]

    def categories(self, method: str, dataset: str, k: int, seed: int) -> list[str]:
        return sorted(self.table(method, dataset, k, seed)["category"].unique())

    def scores(self, method: str, dataset: str, k: int, seed: int, category: str) -> pd.DataFrame:
        """Rows of ``scores.csv`` for ``category``."""
        table = self.table(method, dataset, k, seed)
        rows = table[table["category"] == category].reset_index(drop=True)
        if rows.empty:
            raise KeyError(f"category '{category}' not in {self.folder(method, dataset, k, seed) / 'scores.csv'}")
        return rows

    def maps(self, method: str, dataset: str, k: int, seed: int, category: str) -> dict[str, np.ndarray]:
        """image_path -> float32 map [E, E] of ``maps_<category>.npz``."""
        key = ("maps", method, dataset, k, seed, category)
        if key not in self._cache:
            path = self.folder(method, dataset, k, seed) / f"maps_{category}.npz"
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (evaluate with save_maps: 1)")
            with np.load(path) as npz:
                self._cache[key] = dict(zip(npz["image_path"].tolist(), npz["maps"].astype(np.float32)))
        return self._cache[key]


def score_difference(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """d = s'_A - s'_B per image_path, s' = scores min-max normalised over the rows given (one
    category); images missing from either side raise ``KeyError``."""
    sa, sb = (t.set_index("image_path")["score"].astype(float) for t in (a, b))
    if set(sa.index) != set(sb.index):
        raise KeyError(f"the two runs scored different images: {sorted(set(sa.index) ^ set(sb.index))[:3]}")
    return (_minmax(sa) - _minmax(sb.reindex(sa.index))).rename("difference")


def sort_images(a: pd.DataFrame, b: pd.DataFrame, order: str) -> list[str]:
    """Image paths of one category in the ``order`` of :data:`SORTS`."""
    if order == "path":
        return sorted(a["image_path"])
    if order == SORTS[1]:
        return a.sort_values(["score", "image_path"], ascending=[False, True])["image_path"].tolist()
    diff = score_difference(a, b) if order == SORTS[2] else score_difference(b, a) if order == SORTS[3] else None
    if diff is None:
        raise ValueError(f"unknown sort order {order!r}; choose one of {SORTS}")
    return diff.reset_index().sort_values(["difference", "image_path"], ascending=[False, True])["image_path"].tolist()


class Explorer:
    """The ipywidgets explorer (see the module docstring). ``samples`` (a samples table of
    ``fsadlib.data``) gives mask paths; default: ``fsadlib.data.load_samples(dataset)`` on demand."""

    def __init__(self, root: str | Path | None = None, samples: pd.DataFrame | None = None) -> None:
        self.index = ResultsIndex(root)
        self._samples = {} if samples is None else {d: g for d, g in samples.groupby("dataset")}
        self.figure = Figure(figsize=(13, 3.6), constrained_layout=True)
        self.output = widgets.Output()
        methods = self.index.choices("method")
        self.dataset = widgets.Dropdown(description="data set", options=self.index.choices("dataset"))
        self.method_a = widgets.Dropdown(description="method A", options=methods)
        self.method_b = widgets.Dropdown(description="method B", options=methods,
                                         value=methods[1] if len(methods) > 1 else methods[0])
        self.k = widgets.Dropdown(description="k")
        self.seed = widgets.Dropdown(description="seed")
        self.category = widgets.Dropdown(description="category")
        self.sort = widgets.Dropdown(description="sort", options=SORTS, value=SORTS[0])
        self.image = widgets.Dropdown(description="image", layout=widgets.Layout(width="95%"))
        self._busy = False
        self._refresh_choices()
        for w in (self.dataset, self.method_a, self.method_b, self.k, self.seed):
            w.observe(lambda change: self._refresh_choices(), names="value")
        for w in (self.category, self.sort):
            w.observe(lambda change: self._refresh_images(), names="value")
        self.image.observe(lambda change: None if self._busy else self.render(), names="value")
        controls = widgets.VBox([widgets.HBox([self.dataset, self.category, self.k, self.seed]),
                                 widgets.HBox([self.method_a, self.method_b, self.sort]), self.image])
        self.widget = widgets.VBox([controls, self.output])

    # -- choices ----------------------------------------------------------------------------------
    def _refresh_choices(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            dataset, method = self.dataset.value, self.method_a.value
            self._set(self.k, self.index.choices("k", dataset=dataset, method=method))
            self._set(self.seed, self.index.choices("seed", dataset=dataset, method=method, k=self.k.value))
            self._set(self.category, self.index.categories(method, dataset, self.k.value, self.seed.value))
        finally:
            self._busy = False
        self._refresh_images()

    def _refresh_images(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            a, b = self.run_scores()
            self._set(self.image, sort_images(a, b, self.sort.value), keep=False)
        finally:
            self._busy = False
        self.render()

    @staticmethod
    def _set(widget: widgets.Dropdown, options: list, keep: bool = True) -> None:
        value = widget.value
        widget.options = options
        widget.value = value if keep and value in options else (options[0] if options else None)

    # -- data -------------------------------------------------------------------------------------
    def run_k(self, method: str) -> int:
        return self.index.nearest_k(method, self.dataset.value, self.k.value)

    def run_scores(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Scores of the selected category for method A and method B."""
        return tuple(self.index.scores(m, self.dataset.value, self.run_k(m), self.seed.value, self.category.value)
                     for m in (self.method_a.value, self.method_b.value))

    def mask(self, image_path: str, size: int) -> np.ndarray | None:
        """The ground-truth mask [size, size] of ``image_path`` by MASK_RULE (None for normal images)."""
        from fsadlib import data

        dataset = self.dataset.value
        if dataset not in self._samples:
            self._samples[dataset] = data.load_samples(dataset)
        rows = self._samples[dataset]
        rows = rows[rows["image_path"] == image_path]
        if rows.empty:
            raise KeyError(f"image {image_path} is not in the samples table of data set '{dataset}'")
        mask_path = str(rows["mask_path"].iloc[0])
        return data.load_mask(mask_path, size).numpy() if mask_path else None

    # -- drawing ----------------------------------------------------------------------------------
    def render(self) -> Figure:
        """Redraw :attr:`figure` for the selected image and show it in :attr:`output`."""
        from fsadlib import data

        path = self.image.value
        self.figure.clear()
        if path is not None:
            axes = self.figure.subplots(1, 4)
            a_scores, b_scores = self.run_scores()
            runs = []
            for method, scores in ((self.method_a.value, a_scores), (self.method_b.value, b_scores)):
                k = self.run_k(method)
                maps = self.index.maps(method, self.dataset.value, k, self.seed.value, self.category.value)
                lo, hi = category_range(np.stack(list(maps.values())))
                score = float(scores.set_index("image_path").loc[path, "score"])
                runs.append((method, f"{method} k{k}: score {score:.3g}", normalise(maps[path], lo, hi)))
            size = max(DISPLAY_MIN_SIZE, *(amap.shape[0] for _, _, amap in runs))
            shown = [resample_map(amap, size) for _, _, amap in runs]
            image = resize_image(data.read_image(data.resolve_path(path)), size)
            mask = self.mask(path, size)
            row = a_scores.set_index("image_path").loc[path]
            draw_overlay(axes[0], image, mask=mask, title=f"{Path(path).name} ({row['defect']}, label {row['label']})")
            for ax, (method, title, _), amap in zip(axes[1:3], runs, shown):
                draw_overlay(ax, image, amap, mask, title=title)
                ax.title.set_color(method_colour(method))
            (a, _, _), (b, _, _) = runs
            draw_overlay(axes[3], image, shown[0] - shown[1], mask, alpha=0.75, cmap="RdBu_r", limits=(-1.0, 1.0),
                         title=f"{a} - {b} (red: {a} higher)")
        self.output.clear_output(wait=True)
        with self.output:
            display(self.png())
        return self.figure

    def png(self) -> Image:
        """:attr:`figure` as a PNG image (``DISPLAY_DPI``). The figure is drawn explicitly: a bare
        matplotlib ``Figure`` has no pyplot manager, so Jupyter would only show its text repr."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=DISPLAY_DPI)
        return Image(data=buffer.getvalue(), format="png")


def _minmax(values: pd.Series) -> pd.Series:
    lo, hi = values.min(), values.max()
    return (values - lo) / (hi - lo) if hi > lo else values * 0.0
