"""FineGrainedAD's defect vocabulary: ``preset: paper`` writes the public per-class phrases into MLLP's
abnormal texts, ``workbench`` the captions' own; expected texts written out by hand."""

from __future__ import annotations

import torch

from fsadlib.captions import Captions
from fsadlib.clip import BackboneConfig
from fsadlib.methods.finegrained.model import FineGrainedAD, FineGrainedConfig
from fsadlib.methods.finegrained.vocabulary import defect_phrases, paper_phrase_table

MVTEC = {"bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile",
         "toothbrush", "transistor", "wood", "zipper"}
VISA = {"candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3",
        "pcb4", "pipe_fryum"}


def hazelnut(dataset: str = "mvtec", category: str = "hazelnut") -> Captions:
    return Captions(dataset=dataset, category=category, class_name="hazelnut", foreground="hazelnut",
                    background="black", entity=("hazelnut",), number=("one",), location=("center",),
                    relation="the hazelnut lies alone", color=("brown",), texture=("smooth",), shape=("round",),
                    entity_caption=("a brown hazelnut at the center",),
                    caption="a brown hazelnut on a black background.",
                    anomaly_phrases=("cracked {}", "{} with hole"))


def test_table_covers_mvtec_and_visa_with_one_placeholder_each():
    table = paper_phrase_table()
    assert set(table) == MVTEC | VISA
    assert all(p.count("{}") == 1 and p.startswith("{} ") for phrases in table.values() for p in phrases)
    assert table["hazelnut"] == ("{} with crack", "{} with cut", "{} with hole", "{} with print")
    assert table["metal_nut"][0] == "{} with a bent shape "         # the public trailing space
    assert table["fryum"].count("{} with colour spot") == 2         # listed twice in the public code
    assert len(table["pcb4"]) == 7 and table["screw"] == ("{} with manipulated front", "{} with scratch neck",
                                                           "{} with scratch head")


def test_paper_uses_the_public_phrases_where_listed():
    c = hazelnut()
    assert defect_phrases(c, paper=False) == ("cracked {}", "{} with hole")
    assert defect_phrases(c, paper=True) == ("{} with crack", "{} with cut", "{} with hole", "{} with print")
    assert defect_phrases(hazelnut(category="acorn"), paper=True) == ("cracked {}", "{} with hole")  # not listed
    assert defect_phrases(hazelnut(dataset="synthetic", category="grid"), paper=True) == ("cracked {}",
                                                                                         "{} with hole")


def test_model_texts_follow_the_preset():
    torch.manual_seed(0)
    texts = {}
    for preset in ("workbench", "paper"):
        m = FineGrainedAD(FineGrainedConfig(backbone=BackboneConfig(arch="tiny"), region_upscale=2, preset=preset))
        m.set_captions(hazelnut())
        texts[preset] = m.table.texts
    image = {p: t.levels[0].abnormal for p, t in texts.items()}
    assert image["workbench"] == ("a brown cracked hazelnut on a black background.",
                                  "a brown hazelnut with hole on a black background.")
    assert image["paper"] == ("a brown hazelnut with crack on a black background.",
                              "a brown hazelnut with cut on a black background.",
                              "a brown hazelnut with hole on a black background.",
                              "a brown hazelnut with print on a black background.")
    assert texts["paper"].levels[1].abnormal == ("black background with crack", "black background with cut",
                                                 "black background with hole", "black background with print")
    (entity,) = texts["paper"].levels[2].abnormal  # one per entity, its phrase one of the four
    assert sum(f"hazelnut with {d} at" in entity for d in ("crack", "cut", "hole", "print")) == 1
    assert m.captions.anomaly_phrases == ("cracked {}", "{} with hole")  # the captions stay as they are
