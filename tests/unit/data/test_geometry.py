"""Image geometry: equal to torchvision's Resize + CenterCrop, identical for images and masks (an oracle
method on non-square images with anomalies at the border scores pixel AUROC = AUPRO = 1 under both)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from fsadlib.data import GEOMETRIES, load_mask
from fsadlib.data.geometry import check_geometry, fit
from fsadlib.evaluate import EvalConfig, evaluate
from fsadlib.methods.base import AnomalyMethod
from fsadlib.methods.output import AnomalyOutput


@pytest.mark.parametrize("wh", [(96, 64), (64, 96), (1500, 1000), (33, 50), (40, 40)])
def test_resize_crop_equals_torchvision(wh):
    rng = np.random.default_rng(sum(wh))
    image = Image.fromarray(rng.integers(0, 255, (wh[1], wh[0], 3), np.uint8))
    reference = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(32)])
    assert np.array_equal(np.asarray(fit(image, 32, "resize_crop", Image.BICUBIC)), np.asarray(reference(image)))
    assert np.array_equal(np.asarray(fit(image, 32, "squash", Image.BICUBIC)),
                          np.asarray(image.resize((32, 32), Image.BICUBIC)))


def test_unknown_geometry_names_key_and_choices():
    with pytest.raises(KeyError, match=r"'stretch' in params key 'datasets.visa.geometry'.*resize_crop.*squash"):
        check_geometry("stretch", "datasets.visa.geometry")


W, H, S = 96, 64, 32
GREY, RED = 80, (255, 0, 0)
#: anomalies (x0, x1, y0, y1): at the top border (kept by both), and at the left border (cut by the crop)
BOXES = [(24, 48, 2, 10), (0, 6, 20, 40)]


@dataclass(frozen=True)
class OracleConfig:
    pass


class IdentityBackbone(nn.Module):
    image_size = S
    device = torch.device("cpu")
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    random_weights, geometry = False, None

    def effective_precision(self) -> str:
        return "fp32"


class RednessOracle(AnomalyMethod):
    """Knows the anomaly: map = redness R - (G + B) / 2 of the input (anomalies are pure red)."""

    name = "oracle"

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.config, self.backbone = OracleConfig(), IdentityBackbone()

    def setup_category(self, class_name, supports=None):
        pass

    def forward(self, images):
        redness = images[:, 0] - (images[:, 1] + images[:, 2]) / 2
        return AnomalyOutput(redness.flatten(1).amax(1), redness)


def write_tree(root) -> pd.DataFrame:
    rows = []
    for i, boxes in enumerate([[], [BOXES[0]], [BOXES[1]], BOXES]):
        image = np.full((H, W, 3), GREY, np.uint8)
        mask = np.zeros((H, W), np.uint8)
        for x0, x1, y0, y1 in boxes:
            image[y0:y1, x0:x1], mask[y0:y1, x0:x1] = RED, 255
        image_path, mask_path = root / f"{i}.png", root / f"{i}_mask.png"
        Image.fromarray(image).save(image_path)
        Image.fromarray(mask).save(mask_path)
        rows.append({"dataset": "toy", "category": "plate", "split": "test", "label": int(bool(boxes)),
                     "defect": "red" if boxes else "good", "image_path": str(image_path),
                     "mask_path": str(mask_path) if boxes else ""})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_oracle_map_is_perfect_on_non_square_images(tmp_path, geometry):
    samples = write_tree(tmp_path)
    result = evaluate(RednessOracle(), "toy", samples=samples, out_dir=tmp_path / geometry,
                      config=EvalConfig(save_maps=0, bootstrap=0), geometry=geometry)
    plate = result["categories"]["plate"]
    assert plate["pixel_auroc"] == 1.0 and plate["pixel_aupro"] == pytest.approx(1.0, abs=1e-12)
    assert result["run"]["geometry"] == geometry and geometry in result["run"]["image_transform"]
    assert result["run"]["mask_rule"].endswith(f"(M = {S})") and result["run"]["eval_size"] == S


def test_the_two_geometries_score_different_pixels(tmp_path):
    """The oracle test discriminates: a mask under the other geometry would not line up."""
    samples = write_tree(tmp_path)
    masks = {g: load_mask(samples.mask_path[3], S, (W, H), g) for g in GEOMETRIES}
    assert masks["resize_crop"].sum() == 12 * 4  # the left-border anomaly is cut
    assert masks["squash"].sum() == 8 * 4 + 2 * 10
    assert not torch.equal(masks["resize_crop"], masks["squash"])


def test_geometry_precedence_method_then_dataset_then_default(workbench):
    """backbone.geometry beats datasets.<name>.geometry, which beats resize_crop; bad names are named."""
    from fsadlib.clip import BackboneConfig
    from fsadlib.data import resolve_geometry

    (workbench / "params.yaml").write_text(
        "datasets:\n  visa: {reader: visa, root: x, geometry: squash}\n  mvtec: {reader: mvtec, root: y}\n")
    assert resolve_geometry("mvtec") == "resize_crop"
    assert resolve_geometry("toy_not_in_params") == "resize_crop"
    assert resolve_geometry("visa") == "squash"
    assert resolve_geometry("visa", "resize_crop") == "resize_crop"
    with pytest.raises(KeyError, match=r"'crop' in params key 'backbone.geometry'; choices"):
        resolve_geometry("visa", "crop")
    with pytest.raises(KeyError, match=r"'crop' in params key 'backbone.geometry'; choices"):
        BackboneConfig(geometry="crop")
    (workbench / "params.yaml").write_text("datasets:\n  visa: {reader: visa, root: x, geometry: crop}\n")
    with pytest.raises(KeyError, match=r"'crop' in params key 'datasets.visa.geometry'; choices"):
        resolve_geometry("visa")


def test_the_evaluation_follows_the_backbone_geometry(tmp_path):
    """A method that declares ``squash`` is evaluated squashed without being told."""
    samples = write_tree(tmp_path)
    oracle = RednessOracle()
    oracle.backbone = type("Squashing", (IdentityBackbone,), {"geometry": "squash"})()
    result = evaluate(oracle, "toy", samples=samples, out_dir=tmp_path / "own",
                      config=EvalConfig(save_maps=0, bootstrap=0))
    assert result["run"]["geometry"] == "squash"


def test_training_reads_its_images_with_the_same_rule(workbench):
    """Training loaders take the data set's transform (or the method's), as the evaluation does."""
    from fsadlib.data import samples_geometry
    from fsadlib.methods.kag_prompt.train import SyntheticAnomalyBatches

    (workbench / "params.yaml").write_text("datasets:\n  visa: {reader: visa, root: x, geometry: squash}\n")
    rows = pd.DataFrame([{"dataset": "visa", "category": "pcb1", "split": "train", "label": 0, "defect": "good",
                          "image_path": f"{i}.png", "mask_path": ""} for i in range(2)])
    assert samples_geometry(rows) == "squash" and samples_geometry(rows, "resize_crop") == "resize_crop"
    assert SyntheticAnomalyBatches(rows, 32, 1, "cutpaste", (0.5,) * 3, (0.5,) * 3).dataset.geometry == "squash"
    with pytest.raises(ValueError, match=r"one data set.*\['visa', 'mvtec'\]"):
        samples_geometry(pd.concat([rows, rows.assign(dataset="mvtec")]))
