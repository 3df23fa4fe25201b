"""Measured effect of ``preset: paper`` against ``workbench`` on a fixed random-weight run (tiny CLIP,
seeded weights and images): max |score change| and max |map change| at test time, and the relative
change of the training loss on one fixed batch. Prints the rows of the README tables.

    python tests/reference/preset_effects.py [method ...]
"""

from __future__ import annotations

import sys

import torch

from fsadlib.captions import Captions
from fsadlib.methods import create


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def pair(name: str, **config):
    out = []
    for preset in ("workbench", "paper"):
        torch.manual_seed(0)
        out.append(create(name, backbone={"arch": "tiny"}, preset=preset, **config))
    return out


def output_change(models, category, supports, x):
    outs = []
    for m in models:
        m.eval()
        m.setup_category(category, supports)
        with torch.no_grad():
            outs.append(m(x))
    return (float((outs[0].pred_score - outs[1].pred_score).abs().max()),
            float((outs[0].anomaly_map - outs[1].anomaly_map).abs().max()))


def report(label: str, **values: float) -> None:
    print(f"{label}: " + ", ".join(f"{key.replace('_', ' ')} {value:.2e}" for key, value in values.items()))


def report_outputs(label: str, change: tuple[float, float]) -> None:
    report(label, score=change[0], map=change[1])


def loss_change(losses) -> float:
    a, b = (float(v) for v in losses)
    return abs(b - a) / abs(a)


def winclip():
    for name in ("winclip", "winclip_plus"):
        report_outputs(f"{name} test", output_change(pair(name), "metal_nut", images(2, 1), images(4, 2)))


def inctrl():
    from fsadlib.methods.inctrl.train import InctrlLossConfig, inctrl_loss

    report_outputs("inctrl test (batch 4)", output_change(pair("inctrl"), "metal_nut", images(2, 1), images(4, 2)))
    batch = {"image": images(4, 3), "prompts": images(8, 4).view(4, 2, 3, 64, 64),
             "label": torch.tensor([0.0, 0.0, 1.0, 1.0]), "category": ["metal_nut"] * 4}
    losses = [inctrl_loss(m.train(), batch, InctrlLossConfig())["loss"].detach() for m in pair("inctrl")]
    report("inctrl training loss (legacy layout + double sigmoid)", relative_change=loss_change(losses))


def kag_prompt():
    from fsadlib.methods.kag_prompt.train import KagLossConfig, kag_loss

    cfg = {"layers": [3, 6, 9, 12], "proj_dim": 24, "topk": 5}
    report_outputs("kag_prompt test (BatchNorm in eval mode)",
                output_change(pair("kag_prompt", **cfg), "metal_nut", images(1, 1), images(2, 2)))
    mask = torch.zeros(4, 64, 64)
    mask[1, 10:30, 20:40] = 1
    batch = {"image": images(4, 3), "mask": mask, "category": ["metal_nut"] * 4}
    models = pair("kag_prompt", **cfg)
    outs = [m.train().prompt_branch(m.encode(batch["image"]), m.text_for("metal_nut"))[0] for m in models]
    report("kag_prompt training-mode maps", max_change=float((outs[0] - outs[1]).abs().max()))
    losses = [kag_loss(m, batch, KagLossConfig())["loss"].detach() for m in models]
    report("kag_prompt training loss", relative_change=loss_change(losses))


def bayes_pfl():
    from fsadlib.methods.bayes_pfl.train import BayesPFLTrainConfig, stage1_loss

    cfg = {"layers": [3, 12], "test_samples": 2, "topk": 30, "sigma": 1.5}
    report_outputs("bayes_pfl test (4 images)", output_change(pair("bayes_pfl", **cfg), "metal_nut", None, images(4, 2)))
    mask = torch.zeros(4, 64, 64)
    mask[1, 8:30, 20:44] = 1
    batch = {"image": images(4, 3), "mask": mask, "label": torch.tensor([0, 1, 0, 1]), "category": ["metal_nut"] * 4}
    kls = []
    for m in pair("bayes_pfl", **cfg):
        torch.manual_seed(11)
        kls.append(stage1_loss(m.train(), batch, BayesPFLTrainConfig())["kl"])
    report("bayes_pfl KL term (N = 4)", relative_change=loss_change(kls))


def finegrained():
    from fsadlib.methods.finegrained.train import finegrained_loss, training_batch

    captions = Captions(dataset="toy", category="widget", class_name="widget", foreground="widget",
                        background="black", entity=("cap", "body"), number=("one", "one"), location=("top", "center"),
                        relation="the cap is above the body", color=("red", "blue"), texture=("smooth", "rough"),
                        shape=("round", "square"), entity_caption=("a red cap at the top", "a blue body at the center"),
                        caption="a photo of a widget on a black background.",
                        anomaly_phrases=("{} with hole", "broken {}", "{} with scratch"))
    models = pair("finegrained", captions_dataset="toy", region_upscale=2, sigma=1.5)
    for m in models:
        m.set_captions(captions)
    report_outputs("finegrained test (untrained prompts)", output_change(models, "widget", images(2, 1), images(2, 2)))
    losses = []
    for m in models:
        batch, _ = training_batch(m.train(), images(2, 1), 0)
        losses.append(finegrained_loss(m, batch)["loss"].detach())
    report("finegrained training loss (untrained prompts)", relative_change=loss_change(losses))
    finegrained_vocabulary(captions)


def finegrained_vocabulary(captions: Captions) -> None:
    """The defect vocabulary alone, on MVTec AD hazelnut captions: the workbench phrases
    (``fsadlib.captions.vocab``) -> the public ones, same seeded model."""
    from dataclasses import replace

    from fsadlib.captions.vocab import anomaly_phrases
    from fsadlib.methods.finegrained.vocabulary import paper_phrase_table

    hazelnut = replace(captions, dataset="mvtec", category="hazelnut", class_name="hazelnut", foreground="hazelnut",
                       entity=("shell", "tip"), entity_caption=("a brown shell at the top", "a pale tip at the center"),
                       relation="the tip is below the shell", caption="a photo of a hazelnut on a black background.")
    models = []
    for phrases in (anomaly_phrases("mvtec", "hazelnut"), paper_phrase_table()["hazelnut"]):
        torch.manual_seed(0)
        model = create("finegrained", backbone={"arch": "tiny"}, captions_dataset="mvtec", region_upscale=2, sigma=1.5)
        model.set_captions(replace(hazelnut, anomaly_phrases=phrases))
        models.append(model)
    report_outputs("finegrained defect vocabulary (hazelnut)", output_change(models, "hazelnut", images(2, 1), images(2, 2)))


METHODS = {"winclip": winclip, "inctrl": inctrl, "kag_prompt": kag_prompt, "bayes_pfl": bayes_pfl,
           "finegrained": finegrained}

if __name__ == "__main__":
    for key in sys.argv[1:] or METHODS:
        METHODS[key]()
