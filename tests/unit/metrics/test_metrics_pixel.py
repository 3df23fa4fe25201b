"""Pixel metrics: scikit-learn and the slow definition-level AUPRO, hand cases, chunking, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from metrics_reference import mvtec_like, slow_aupro
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from fsadlib.metrics import legacy_cflow_aupro, pixel, pixel_metrics, sweep
from fsadlib.metrics.regions import label_regions
from fsadlib.metrics.sweep import descending_bits


def sklearn_pixel(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    y, s = masks.ravel(), maps.ravel()
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        f1 = float(np.nan_to_num(2 * p * r / (p + r)).max())
    return {"auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s), "f1_max": f1}


@pytest.mark.parametrize("seed, levels", [(0, None), (1, None), (2, 12), (3, 40)])
def test_equal_to_sklearn_and_slow_aupro(seed, levels):
    maps, masks = mvtec_like(6, 24, seed, levels)
    got = pixel_metrics(maps, masks)
    for key, want in sklearn_pixel(maps, masks).items():
        assert got[key] == pytest.approx(want, abs=1e-9), key
    assert got["aupro"] == pytest.approx(slow_aupro(maps, masks), abs=1e-9)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_at_other_limits(fpr_limit):
    maps, masks = mvtec_like(4, 20, 5, levels=30)
    got = pixel_metrics(maps, masks, fpr_limit=fpr_limit)["aupro"]
    assert got == pytest.approx(slow_aupro(maps, masks, fpr_limit), abs=1e-9)


def test_many_small_regions():
    rng = np.random.default_rng(7)
    masks = rng.random((3, 20, 20)) < 0.08  # dozens of 1-3 pixel regions per image
    maps = (rng.random((3, 20, 20)) + masks * rng.random((3, 20, 20))).astype(np.float32)
    assert pixel_metrics(maps, masks)["aupro"] == pytest.approx(slow_aupro(maps, masks), abs=1e-9)


def test_stripes_hand_case():
    # score = column index; region A = column 9 (10 px), region B = column 7 rows 0-4 (5 px, not
    # touching A); 85 negatives. t=9: FPR 0, PRO 1/2;  t=8: FPR 10/85, PRO 1/2;  t=7: FPR 15/85, PRO 1;
    # t=6: FPR 25/85; t=5: FPR 35/85 > 0.3, interpolated on PRO = 1:
    # area = 1/2 * 10/85 + 3/4 * 5/85 + (0.3 - 15/85) = 0.3 - 6.25/85 -> AUPRO = 1 - 6.25/25.5 = 77/102.
    # AUROC: (10*85 + 5*(70 + 5/2)) / (15*85); AP: 10/15 * 1 + 5/15 * 15/30; F1: max(20/25, 20/35, 30/45).
    maps = np.tile(np.arange(10, dtype=np.float32), (1, 10, 1))
    masks = np.zeros((1, 10, 10), dtype=bool)
    masks[0, :, 9] = True
    masks[0, :5, 7] = True
    got = pixel_metrics(maps, masks)
    assert got["aupro"] == pytest.approx(77 / 102, abs=1e-12)
    assert got["auroc"] == pytest.approx((850 + 5 * 72.5) / 1275, abs=1e-12)
    assert got["ap"] == pytest.approx(10 / 15 + 5 / 15 * 0.5, abs=1e-12)
    assert got["f1_max"] == pytest.approx(0.8, abs=1e-12)
    masks[0, :5, 8] = True  # now B touches A diagonally and along column 8: one region of 20 px
    assert pixel_metrics(maps, masks)["aupro"] == pytest.approx(slow_aupro(maps, masks), abs=1e-12)


def test_regions_are_8_connected_per_image():
    # (0,0)-(1,1) touch at a corner: one region of area 2 (8-connectivity). (1,1) scores below every
    # negative, so PRO = (1/2 + 1) / 2 = 3/4 on the whole [0, 0.3] band (4-connectivity would give 2/3).
    maps = np.full((1, 8, 8), 0.5, dtype=np.float32)
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 5, 5] = True
    maps[0, 0, 0] = maps[0, 5, 5] = 1.0
    maps[0, 1, 1] = 0.0
    assert pixel_metrics(maps, masks)["aupro"] == pytest.approx(0.75, abs=1e-12)
    # a region touching the border of image 0 and image 1 at the same place stays two regions
    two = np.zeros((2, 4, 4), dtype=bool)
    two[:, 1, 1] = True
    regions = label_regions(torch.from_numpy(two), two.any(2), two.any(1))
    assert regions.count == 2 and regions.areas.tolist() == [1, 1]


def test_bounds_perfect_inverted_and_ones():
    maps, masks = mvtec_like(4, 16, 3)
    perfect = pixel_metrics(masks.astype(np.float32), masks)
    assert perfect == pytest.approx({"auroc": 1.0, "ap": 1.0, "f1_max": 1.0, "aupro": 1.0}, abs=1e-12)
    assert pixel_metrics(-masks.astype(np.float32), masks)["aupro"] == 0.0
    assert 0.0 <= pixel_metrics(maps, masks)["aupro"] <= 1.0


def test_all_normal_and_all_anomalous():
    maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    normal = pixel_metrics(maps, np.zeros((2, 8, 8), dtype=bool))
    assert all(math.isnan(v) for v in normal.values())
    anomalous = pixel_metrics(maps, np.ones((2, 8, 8), dtype=bool))
    assert math.isnan(anomalous["auroc"]) and math.isnan(anomalous["aupro"])
    assert anomalous["ap"] == 1.0 and anomalous["f1_max"] == 1.0


def test_strictly_increasing_transform_changes_nothing():
    maps, masks = mvtec_like(4, 16, 4, levels=50)
    base = pixel_metrics(maps, masks)
    assert pixel_metrics(np.exp(maps / 10).astype(np.float32) * 7 - 2, masks) == base


@pytest.mark.filterwarnings("error")  # a block written through a wrongly sized slice warns (out= resized)
def test_blocks_and_sort_runs_do_not_change_results(monkeypatch):
    maps, masks = mvtec_like(6, 16, 8, levels=20)  # ties straddle the small block and run borders
    base = pixel_metrics(maps, masks)
    monkeypatch.setitem(pixel._BLOCK, "cpu", 300)
    monkeypatch.setitem(sweep.SORT_RUN, "cpu", 7)
    assert pixel_metrics(maps, masks) == base


def test_input_types_agree():
    maps, masks = mvtec_like(4, 16, 9)
    base = pixel_metrics(maps, masks)
    assert pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks).float()) == base
    assert pixel_metrics(maps.astype(np.float64), masks.astype(np.uint8)) == base  # float32 exact values
    ro = maps.copy()
    ro.setflags(write=False)
    assert pixel_metrics(ro, masks) == base


def test_one_map_without_the_image_axis_is_one_image():
    maps, masks = mvtec_like(1, 16, 4)
    assert pixel_metrics(maps[0], masks[0]) == pixel_metrics(maps, masks)


def test_memory_guard(monkeypatch):
    monkeypatch.setattr(pixel, "available_host_memory", lambda: 10**6)
    with pytest.raises(MemoryError, match="4 B/pixel"):
        pixel_metrics(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), bool))


def test_memory_need_is_bytes_per_pixel_and_per_defect_pixel_plus_the_overhead(monkeypatch):
    need = 4 * 100 + 160 * 10 + 24 * 2**22  # CPU: 4 B/pixel, 160 B/defect pixel, blocks
    monkeypatch.setattr(pixel, "available_host_memory", lambda: need)
    pixel.check_memory(100, 10, torch.device("cpu"))
    monkeypatch.setattr(pixel, "available_host_memory", lambda: need - 1)
    with pytest.raises(MemoryError, match=rf"needs about {need / 2**30:.2f} GiB .* 160 B x 10 defect pixels"):
        pixel.check_memory(100, 10, torch.device("cpu"))


def test_cuda_memory_need_is_4_bytes_per_pixel_plus_one_sort_run(monkeypatch):
    # the int32 array (4 B/pixel) + 160 B/defect pixel + blocks of 2^26 pixels x 24 B + torch.sort's
    # temporaries for one run of 2^26 pixels x 32 B; no CUDA needed: the free memory is patched
    need = 4 * 10**9 + 160 * 10 + 24 * 2**26 + 32 * 2**26
    monkeypatch.setattr(pixel.torch.cuda, "mem_get_info", lambda device: (need, 2 * need))
    pixel.check_memory(10**9, 10, torch.device("cuda"))
    monkeypatch.setattr(pixel.torch.cuda, "mem_get_info", lambda device: (need - 1, 2 * need))
    with pytest.raises(MemoryError, match=r"4 B/pixel x 1,000,000,000 pixels"):
        pixel.check_memory(10**9, 10, torch.device("cuda"))


@pytest.mark.parametrize("maps, masks, kw, match", [
    (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), {}, "must be equal"),
    (np.zeros(16), np.zeros(16), {}, r"non-empty \[N, H, W\]"),   # equal shapes, but not images
    (np.zeros((2, 4, 4)), np.full((2, 4, 4), 0.5), {}, "masks must be binary"),
    (np.full((1, 4, 4), np.nan), np.zeros((1, 4, 4)), {}, "NaN"),
    (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), {"fpr_limit": 0}, "fpr_limit"),
])
def test_bad_input_raises(maps, masks, kw, match):
    with pytest.raises(ValueError, match=match):
        pixel_metrics(maps, masks, **kw)


def cflow_cal_pro_score(masks, amaps, max_step=200, expect_fpr=0.3):
    """The cflow-ad loop as published (re-binarise and re-label at every threshold)."""
    from skimage import measure
    from sklearn.metrics import auc

    binary_amaps = np.zeros_like(amaps, dtype=bool)
    min_th, max_th = amaps.min(), amaps.max()
    delta = (max_th - min_th) / max_step
    pros, fprs = [], []
    for th in np.arange(min_th, max_th, delta):
        binary_amaps[amaps <= th], binary_amaps[amaps > th] = 0, 1
        pro = []
        for binary_amap, mask in zip(binary_amaps, masks):
            for region in measure.regionprops(measure.label(mask)):
                pro.append(binary_amap[region.coords[:, 0], region.coords[:, 1]].sum() / region.area)
        inverse_masks = 1 - masks
        fprs.append(np.logical_and(inverse_masks, binary_amaps).sum() / inverse_masks.sum())
        pros.append(np.array(pro).mean())
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < expect_fpr
    fprs = fprs[keep]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return auc(fprs, pros[keep])


@pytest.mark.parametrize("seed, levels", [(0, None), (1, 25)])
def test_legacy_equals_published_loop_and_differs_from_exact(seed, levels):
    maps, masks = mvtec_like(4, 16, seed, levels)
    legacy = legacy_cflow_aupro(maps, masks)
    assert legacy == pytest.approx(cflow_cal_pro_score(masks.astype(int), maps), abs=1e-9)
    assert abs(legacy - pixel_metrics(maps, masks)["aupro"]) > 1e-4


def test_host_memory_without_meminfo_is_free_pages_times_page_size(monkeypatch):
    def no_meminfo(*args, **kwargs):
        raise OSError("no /proc/meminfo")

    monkeypatch.setattr("builtins.open", no_meminfo)
    monkeypatch.setattr(pixel.os, "sysconf", {"SC_AVPHYS_PAGES": 3, "SC_PAGE_SIZE": 4096}.__getitem__)
    assert pixel.available_host_memory() == 3 * 4096


def test_a_defect_tying_normal_pixels_of_other_blocks_and_runs(monkeypatch):
    # one image per encoding block; the defect pixel of image 1 scores 0.5 like one normal pixel of
    # image 0 and one of image 2, so its step counts pixels of all three blocks (and sort runs). 12 pixels, P = 1,
    # Nn = 11; at t = 0.5: 1 pixel scores above (0.9), N = 4, FP = 3, dFP = 2.
    # AUROC = (11 - 3 + 2/2) / 11; AP = 1/4; F1 = 2 / (4 + 1); AUPRO over (0,0) (1/11,0) (3/11,1) (1,1):
    # (0.5 * 2/11 + (0.3 - 3/11)) / 0.3 = 1 - (2/11) / 0.3 = 13/33.
    maps = np.array([[[0.5, 0.1], [0.2, 0.3]], [[0.5, 0.1], [0.0, 0.2]], [[0.9, 0.5], [0.4, 0.1]]],
                    dtype=np.float32)
    masks = np.zeros_like(maps, dtype=bool)
    masks[1, 0, 0] = True
    monkeypatch.setitem(pixel._BLOCK, "cpu", 4)
    monkeypatch.setitem(sweep.SORT_RUN, "cpu", 5)  # runs of 5 sorted pixels: the ties sit in three
    got = pixel_metrics(maps, masks)
    assert got == pytest.approx({"auroc": 9 / 11, "ap": 1 / 4, "f1_max": 2 / 5, "aupro": 13 / 33}, abs=1e-12)
    assert got == pytest.approx(sklearn_pixel(maps, masks) | {"aupro": slow_aupro(maps, masks)}, abs=1e-12)


@pytest.mark.parametrize("nan_bits", [0x7FC00000, 0xFFC00000])  # +NaN sorts to the low end, -NaN to the high end
@pytest.mark.parametrize("where", ["normal", "defect"])
@pytest.mark.parametrize("run", [1 << 22, 5])  # one sorted run; the NaN inside one of many runs
def test_a_nan_among_normal_or_defect_pixels_alone_is_rejected(monkeypatch, nan_bits, where, run):
    monkeypatch.setitem(sweep.SORT_RUN, "cpu", run)
    maps, masks = mvtec_like(3, 12, 1)
    candidates = np.argwhere(masks) if where == "defect" else np.argwhere(~masks)
    i, r, c = candidates[len(candidates) // 2]
    maps[i, r, c] = np.array([nan_bits], dtype=np.uint32).view(np.float32)[0]
    with pytest.raises(ValueError, match="NaN"):
        pixel_metrics(maps, masks)


def test_defect_keys_from_the_boxes_equal_a_pass_over_every_pixel():
    # the slow reference: label every mask whole, key every defect pixel, sort
    maps, masks = mvtec_like(5, 20, 6, levels=9)
    grid = descending_bits(torch.from_numpy(maps).reshape(-1)).view(maps.shape)
    want, offset = [], 0
    for i, mask in enumerate(masks):
        ids, n = ndimage.label(mask, structure=np.ones((3, 3)))
        r, c = np.nonzero(ids)
        want += [(int(grid[i, y, x]) << 32) | int(ids[y, x] + offset) for y, x in zip(r, c)]
        offset += n
    g = torch.from_numpy(masks)
    got = pixel.defect_keys(grid, label_regions(g, masks.any(2), masks.any(1)))
    assert got.dtype == torch.int64 and got.tolist() == sorted(want) and len(want) == masks.sum() > 0


def test_trapezoid_to_by_hand_one_curve_and_a_batch():
    # polyline (0,0) (0.2,1) (0.6,1) (1,0): up to 0.1 (crossing the first segment): 0.5 * 0.1 * 0.5;
    # up to 0.2 (a vertex): 0.1; up to 0.5: 0.1 + 0.3; up to 0.8: 0.5 + 0.5 * (1 + 0.5) * 0.2; up to 2: 0.7
    x = torch.tensor([0.0, 0.2, 0.6, 1.0], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    want = {0.1: 0.025, 0.2: 0.1, 0.5: 0.4, 0.8: 0.65, 2.0: 0.7}
    for limit, area in want.items():
        assert sweep.trapezoid_to(x, y, limit).item() == pytest.approx(area, abs=1e-15), limit
    batch_x = torch.stack([x, x * 0.5, torch.tensor([0.0, 0.0, 0.05, 0.1], dtype=torch.float64)])
    batch_y = torch.stack([y, y, y])
    got = sweep.trapezoid_to(batch_x, batch_y, 0.3)
    assert got.tolist() == [sweep.trapezoid_to(bx, by, 0.3).item() for bx, by in zip(batch_x, batch_y)]
    assert got.tolist() == pytest.approx([0.2, 0.05 + 0.2, 0.05 + 0.05 * 0.5], abs=1e-15)  # 2nd: a vertex at 0.3
