"""FineGrainedAD on the tiny backbone: MLLP texts and superposition, DPC-KNN and region weights,
losses and routing against hand-computed values, shapes, a short training run, checkpoints."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from fsadlib.captions import Captions, OfflineCaptioner, save_captions
from fsadlib.captions.vocab import LOCATIONS
from fsadlib.clip import BackboneConfig, ClipBackbone
from fsadlib.methods import create, list_methods, spec_of
from fsadlib.methods.base import load_checkpoint
from fsadlib.methods.finegrained.losses import level_losses, regulariser
from fsadlib.methods.finegrained.model import FineGrainedAD, FineGrainedConfig, category_model, model_path
from fsadlib.methods.finegrained.prompts import ATTRIBUTES, LevelFeatures, build_texts, carry_defect
from fsadlib.methods.finegrained.regions import cluster_means, dpc_knn, effective_k, region_weights
from fsadlib.methods.finegrained.train import fit_category
from fsadlib.train import TrainConfig

CONFIG = FineGrainedConfig(backbone=BackboneConfig(arch="tiny"), captions_dataset="toy", region_upscale=2, sigma=1.0)


def widget() -> Captions:
    return Captions(dataset="toy", category="widget", class_name="widget", foreground="widget", background="black",
                    entity=("cap", "body"), number=("one", "one"), location=("top", "center"),
                    relation="the cap is above the body", color=("red", "blue"), texture=("smooth", "smooth"),
                    shape=("round", "square"), entity_caption=("a red cap at the top", "a blue body at the center"),
                    caption="a photo of a widget on a black background.",
                    anomaly_phrases=("{} with hole", "broken {}", "{} with scratch"))


@pytest.fixture(scope="module")
def backbone() -> ClipBackbone:
    return ClipBackbone(CONFIG.backbone)


@pytest.fixture()
def model(backbone) -> FineGrainedAD:
    torch.manual_seed(0)
    m = FineGrainedAD(CONFIG, backbone_model=backbone)
    m.set_captions(widget())
    return m


@pytest.fixture(scope="module")
def supports() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def test_registered():
    assert "finegrained" in list_methods()
    m = create("finegrained", backbone={"arch": "tiny"}, captions_dataset="toy")
    assert isinstance(m, FineGrainedAD) and m.few_shot and m.per_category and spec_of("finegrained").trainable
    assert FineGrainedConfig().backbone.arch == "ViT-B-16-plus-240" and FineGrainedConfig().logit_scale == 4.6052


def test_defaults_are_the_public_segmentation_code():
    """Spec B1.3-B1.5 and B2, written out: every default of FineGrainedConfig."""
    cfg = FineGrainedConfig()
    assert (cfg.backbone.pretrained, cfg.backbone.image_size) == ("laion400m_e32", 240)
    assert (cfg.n_ctx, cfg.n_pro, cfg.n_ctx_ab, cfg.n_pro_ab, cfg.ctx_init_std) == (4, 1, 1, 4, 0.02)
    assert (cfg.triplet_margin, cfg.match_weight, cfg.reg_weight) == (1.0, 0.001, 1.0)
    assert (cfg.region_upscale, cfg.region_boost, cfg.dpc_k_background, cfg.dpc_k_entity) == (4, 1.5, 8, 5)
    assert (cfg.memory_layers, cfg.sigma, cfg.prompt_seed, cfg.caption_levels) == ((3, 8), 2.4, 111, (1, 2, 3))
    assert (cfg.captions_dataset, cfg.preset) == ("", "workbench")   # captions: set by the training


def test_replacement_mechanism_texts():
    t = build_texts(widget(), seed=111)
    image, background, cap, _body = t.levels
    assert image.normal == ("a photo of a widget on a black background.",)
    assert image.abnormal[1] == "a photo of a broken widget on a black background."
    assert background.abnormal == ("black background with hole", "broken black background",
                                   "black background with scratch")
    assert cap.name == "entity:cap" and len(cap.abnormal) == 3
    for text, phrase in zip(cap.abnormal, widget().anomaly_phrases):
        assert text.startswith(f"a red {phrase.format('cap')} at the ")
        moved = text.split(" at the ")[-1]
        assert moved in LOCATIONS and moved != "top"
    relation = {a.name: a for a in t.attributes}["relation"]
    assert "cap" in relation.abnormal[0] and relation.abnormal[0] != relation.normal[0]
    colors = {a.name: a for a in t.attributes}["color"]
    assert colors.normal == ("red. blue",) and "red" not in colors.abnormal and "green" in colors.abnormal
    assert build_texts(widget(), seed=111) == t  # seeded, reproducible


def test_superposition_equals_manual_sum(model):
    bb, p, table = model.backbone, model.prompts, model.table
    with torch.no_grad():
        p.attribute_logits.copy_(torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -2.0, 0.3]]))
        levels = model.level_features()
        ctx = p.normal_ctx.tokens[0]
        emb, eot = bb.inject(table.level_normal[0], ctx[None])
        for a in range(len(ATTRIBUTES)):
            attr, _ = bb.inject(table.attr_normal[a], ctx[None].expand(len(table.attr_normal[a]), -1, -1))
            emb = emb + torch.sigmoid(p.attribute_logits[0, a]) * attr.mean(0, keepdim=True)
        expected = F.normalize(bb.encode_text_embeddings(emb, eot), dim=-1)
        background, _ = bb.inject(table.level_normal[1], ctx[None])
        expected_bg = F.normalize(bb.encode_text_embeddings(background, table.level_normal[1].argmax(-1) + 4), dim=-1)
    assert torch.allclose(levels[0].normal, expected, atol=1e-5)
    assert torch.allclose(levels[1].normal, expected_bg, atol=1e-5)  # no superposition off the image level
    n_sets = CONFIG.n_pro * CONFIG.n_pro_ab
    assert [f.learned.shape[0] for f in levels] == [n_sets] * 4 and levels[0].handcrafted.shape[0] == 3


def test_long_caption_is_split_not_cut(backbone):
    long = widget().caption + " " + " ".join(f"it has a detail number {i}." for i in range(20))
    c = Captions(**{**widget().__dict__, "caption": long})
    m = FineGrainedAD(CONFIG, backbone_model=backbone)
    with pytest.warns(UserWarning, match="split into"):
        m.set_captions(c)
    ids = m.table.level_normal[0]
    assert ids.shape[0] >= 2 and bool((ids.argmax(-1) + 5 <= 76).all())  # EOT fits after 5 injected tokens
    assert m.level_features()[0].normal.shape[0] == ids.shape[0]


def test_text_budget_is_77_minus_sos_eot_and_the_injected_tokens(backbone):
    """Budget = 77 - 2 - (n_ctx 4 + n_ctx_ab 1) = 70 BPE tokens: 69 x "a" + "." fits, 70 x "a" + "." splits."""
    assert backbone.context_length == 77
    m = FineGrainedAD(CONFIG, backbone_model=backbone)
    m.set_captions(Captions(**{**widget().__dict__, "caption": " ".join(["a"] * 69)}))
    assert m.table.level_normal[0].shape[0] == 1
    with pytest.warns(UserWarning, match="split into"):
        m.set_captions(Captions(**{**widget().__dict__, "caption": " ".join(["a"] * 70)}))
    assert m.table.level_normal[0].shape[0] == 2


def test_every_piece_of_a_split_abnormal_caption_carries_the_defect():
    def words(t):
        return len(t.split())
    text = "a photo of a widget with hole on a black board. " + " ".join(f"it has part {i}." for i in range(12))
    with pytest.warns(UserWarning, match="split into"):
        pieces = carry_defect(text, "widget with hole", words, 12)
    assert len(pieces) > 2 and all("widget with hole" in p and words(p) <= 12 for p in pieces)
    assert carry_defect("a widget with hole.", "widget with hole", words, 12) == ["a widget with hole."]
    assert carry_defect("a widget.", "broken widget", words, 12) == ["broken widget. a widget."]
    texts = build_texts(widget(), 111)
    assert texts.levels[0].defects == ("widget with hole", "broken widget", "widget with scratch")
    assert all(d in t for lv in texts.levels for t, d in zip(lv.abnormal, lv.defects))


def test_effective_k_cap():
    assert effective_k(8, 2) == 1 and effective_k(5, 2) == 1 and effective_k(5, 4) == 2
    assert effective_k(5, 6) == 5 and effective_k(5, 5) == 5


def test_dpc_knn_separates_two_blobs():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 3, generator=g) * 0.05, torch.randn(30, 3, generator=g) * 0.05 + 3])[None]
    labels = dpc_knn(x, 2, 5, generator=g)[0]
    assert labels[:20].unique().numel() == 1 and labels[20:].unique().numel() == 1 and labels[0] != labels[20]
    mask = torch.ones(1, 50, dtype=torch.bool)
    mask[0, :20] = False  # only the second blob: its centres are never masked tokens
    centres = dpc_knn(x, 2, 5, mask=mask, generator=g)[0][20:]
    assert centres.unique().numel() == 2


def test_region_weights_on_known_layout():
    """Fine grid 8x8 (upscale 2 -> 4x4): left half = background text, top right = entity 1, bottom
    right = entity 2 (a mix mostly like entity 1, so the two-way split is foreground/background)."""
    e1, e2, bg = torch.eye(3)
    tok = torch.empty(8, 8, 3)
    tok[:, :4] = bg
    tok[:4, 4:] = e1
    tok[4:, 4:] = F.normalize(0.8 * e1 + 0.6 * e2, dim=0)
    r = region_weights(tok.reshape(1, 64, 3), torch.stack([e1, e2]), bg, upscale=2,
                       generator=torch.Generator().manual_seed(0))
    w = r.weights.view(3, 4, 4)
    left, top_right, bottom_right = torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool), None
    left[:, :2] = True
    top_right[:2, 2:] = True
    bottom_right = ~left & ~top_right
    assert torch.equal(w[2], torch.where(left, 2.5, 1.0))
    assert torch.equal(w[0], torch.where(top_right, 2.5, 1.0))
    assert torch.equal(w[1], torch.where(bottom_right, 2.5, 1.0))


def test_cluster_means_by_hand():
    tokens = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])
    labels = torch.tensor([[0, 0, 1, 1]])
    assert torch.equal(cluster_means(tokens, labels, 3), torch.tensor([[[2.0, 0.0], [2.5, 3.5], [0.0, 0.0]]]))
    use = torch.tensor([[True, True, True, False]])  # the masked token counts for no cluster
    assert torch.equal(cluster_means(tokens, labels, 2, mask=use), torch.tensor([[[2.0, 0.0], [0.0, 2.0]]]))


def test_second_stage_keeps_a_cluster_for_foreground_that_is_no_entity():
    """E = 2 entities, E + 1 stage-2 clusters: fine rows 0-1 of the right half = entity 1, rows 2-3 =
    another part close to entity 1 (0.8 e1 + 0.6 f, f in no text), rows 4-7 = 0.8 e1 + 0.6 e2; left
    half = background. The third cluster takes the other part, so entity 1's map is rows 0-1 only."""
    e1, e2, bg, f = torch.eye(4)
    tok = torch.empty(8, 8, 4)
    tok[:, :4] = bg
    tok[:2, 4:] = e1
    tok[2:4, 4:] = F.normalize(0.8 * e1 + 0.6 * f, dim=0)
    tok[4:, 4:] = F.normalize(0.8 * e1 + 0.6 * e2, dim=0)
    w = region_weights(tok.reshape(1, 64, 4), torch.stack([e1, e2]), bg, upscale=2,
                       generator=torch.Generator().manual_seed(0)).weights.view(3, 4, 4)
    right = torch.zeros(4, 4, dtype=torch.bool)
    right[:, 2:] = True
    rows = torch.arange(4)[:, None]
    assert torch.equal(w[0], torch.where(right & (rows == 0), 2.5, 1.0))
    assert torch.equal(w[1], torch.where(right & (rows >= 2), 2.5, 1.0))
    assert torch.equal(w[2], torch.where(~right, 2.5, 1.0))


def test_fine_tokens_reassemble_the_crops(model, supports):
    with torch.no_grad():
        fine = model.fine_tokens(supports[:1]).view(1, 16, 16, -1)  # upscale 2 x grid 8
        big = F.interpolate(supports[:1], size=(128, 128), mode="bicubic", align_corners=False)
        crop = model.encode(big[:, :, :64, 64:].contiguous()).patch.view(1, 8, 8, -1)  # top-right crop
    assert torch.allclose(fine[:, :8, 8:], crop, atol=1e-5)


def test_level_losses_hand_computed():
    v = torch.tensor([[[1.0, 0.0]]])
    f = LevelFeatures(normal=torch.tensor([[1.0, 0.0]]), handcrafted=torch.tensor([[0.0, 1.0]]),
                      learned=torch.tensor([[0.0, 1.0], [0.6, 0.8]]))
    s = 4.6052
    out = level_losses(v, f, s, margin=1.0)
    assert math.isclose(out["v2t"].item(), -math.log(math.exp(s) / (math.exp(s) + 2 + math.exp(0.6 * s))), rel_tol=1e-5)
    t_a = F.normalize(torch.tensor([0.6, 2.8]) / 3, dim=0)
    expected_tri = max(0.0, 0 - float((v[0, 0] - t_a).pow(2).sum()) + 1.0)
    assert math.isclose(out["tri"].item(), expected_tri, abs_tol=1e-6)
    assert math.isclose(out["match"].item(), 0.3 ** 2 + 0.1 ** 2, rel_tol=1e-5)


def test_regulariser_hand_computed_with_two_pieces_per_set():
    """S = 2 context sets x Pn = 2 pieces, rows set-major; two entities summed, then normalised."""
    def level(learned, normal=((0.0, 1.0), (0.0, 1.0))):
        return LevelFeatures(normal=torch.tensor(normal), handcrafted=torch.zeros(1, 2), learned=torch.tensor(learned))
    image = level([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])         # sets: (0.5, 0.5), (1, 0)
    background = level([[0.0, 0.0]] * 4, normal=((0.0, 0.5), (0.0, 0.5)))  # mean normal (0, 0.5)
    entity_1 = level([[0.0, 2.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])      # sets: (0, 2), (0, 2)
    entity_2 = level([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])      # sets: (1, 0), (0, 1)
    # per set, norm(sum of entities): (1, 2) / sqrt(5) and (0, 1); their mean (1 / (2 sqrt 5), 1 / sqrt 5 + 1 / 2)
    x = 0.75 - 1 / (2 * math.sqrt(5))
    y = 0.25 - (1 / math.sqrt(5) + 0.5) - 0.5
    got = regulariser([image, background, entity_1, entity_2], n_sets=2)
    assert math.isclose(got.item(), math.hypot(x, y), rel_tol=1e-6)


def test_routing_and_text_score_hand_computed(model):
    pairs = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [0, 1.0, 0]]])
    x = torch.tensor([[0.6, 0.0, 0.8], [0.8, 0.0, 0.6], [0.0, 0.6, 0.8]])
    s = CONFIG.logit_scale
    expected = torch.tensor([1 / (1 + math.exp(0.8 * s)), 1 / (1 + math.exp(0.8 * s)),
                             1 / (1 + math.exp((0.8 - 0.6) * s))])
    assert torch.allclose(model.text_scores(x, pairs), expected, atol=1e-6)


def test_forward_shapes_and_requirements(model, supports):
    with pytest.raises(ValueError, match="support"):
        model.setup_category("widget", None)
    model.setup_category("widget", supports)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 64))
    assert out.pred_score.shape == (3,) and out.anomaly_map.shape == (3, 64, 64)
    assert torch.isfinite(out.anomaly_map).all() and (out.pred_score > 0).all()
    assert sum(p.numel() for p in model.trainable_parameters()) == 4 * 32 + 4 * 32 + 8
    with torch.no_grad():
        normal = model(supports)  # the supports themselves are in the memory bank
    assert normal.pred_score.max() < out.pred_score.min()


def test_training_loss_decreases_and_checkpoint_round_trip(tmp_path, backbone, supports, monkeypatch):
    drawing = Image.new("RGB", (64, 64), (128, 128, 128))
    ImageDraw.Draw(drawing).ellipse((8, 8, 30, 30), fill=(220, 30, 30))
    drawing.save(tmp_path / "ref.png")
    captions = OfflineCaptioner()([str(tmp_path / "ref.png")], "toy", "disc", "disc", ("{} with hole", "broken {}"))
    torch.manual_seed(0)
    m = FineGrainedAD(CONFIG, backbone_model=backbone)
    m.set_captions(captions)
    train = TrainConfig(epochs=3, steps_per_epoch=1, lr=0.01, optimizer="sgd", momentum=0.9, seed=111)
    path = model_path("toy", "disc", 2, 0, root=tmp_path / "models")
    history = fit_category(m, "disc", supports, train, path)
    losses = [h["train_loss"] for h in history]
    assert losses[2] < losses[1] < losses[0]
    assert path.is_file() and (path.with_suffix("") / "last.pt").is_file()

    loaded = category_model("toy", "disc", 2, 0, backbone_model=backbone, root=tmp_path / "models")
    for key, value in m.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value)
    assert loaded.captions == captions
    loaded.setup_category("disc", supports)
    m.eval()
    loaded.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = m(images), loaded(images)
    assert torch.equal(a.pred_score, b.pred_score) and torch.equal(a.anomaly_map, b.anomaly_map)
    with pytest.raises(ValueError, match="trained for category 'disc'"):
        loaded.setup_category("widget", supports)

    # the generic loader works too, with the caption file of the category
    save_captions(tmp_path / "captions" / "toy" / "disc.json", captions)
    monkeypatch.setattr("fsadlib.methods.finegrained.model.load_captions",
                        lambda ds, cat: __import__("fsadlib.captions", fromlist=["x"]).load_captions(
                            ds, cat, root=tmp_path / "captions"))
    generic = load_checkpoint(path, backbone_model=backbone)
    generic.setup_category("disc", supports)
    generic.eval()
    with torch.no_grad():
        assert torch.equal(generic(images).pred_score, a.pred_score)
    with pytest.raises(FileNotFoundError, match="k4"):
        category_model("toy", "disc", 4, 0, root=tmp_path / "models")


def test_caption_level_ablation_texts_and_forward(backbone, supports):
    import dataclasses

    for levels in [(1,), (2,), ()]:
        m = FineGrainedAD(dataclasses.replace(CONFIG, caption_levels=levels), backbone_model=backbone)
        m.set_captions(widget())
        m.setup_category("widget", supports)
        with torch.no_grad():
            out = m.eval()(torch.randn(2, 3, 64, 64))
        assert torch.isfinite(out.anomaly_map).all() and out.pred_score.shape == (2,)
    only_l1 = build_texts(widget(), seed=111, caption_levels=(1,))
    assert [a.name for a in only_l1.attributes] == []
    assert only_l1.levels[1].normal == ("black background",)
    assert only_l1.levels[2].normal == ("cap",) and only_l1.levels[2].abnormal[1] == "broken cap"
    no_l1 = build_texts(widget(), seed=111, caption_levels=(2, 3))
    assert no_l1.levels[1].normal == ("background",)
    assert [a.name for a in no_l1.attributes] == ["relation", "color", "texture", "shape"]
    assert [a.name for a in build_texts(widget(), seed=111, caption_levels=(1, 3)).attributes] == [
        "color", "texture", "shape"]
    with pytest.raises(ValueError, match="caption_levels"):
        FineGrainedConfig(caption_levels=(4,))


def test_captions_of_another_data_set_are_refused(backbone, supports, monkeypatch):
    other = Captions(**{**widget().__dict__, "dataset": "mvtec"})
    monkeypatch.setattr("fsadlib.methods.finegrained.model.load_captions", lambda ds, cat: other)
    m = FineGrainedAD(CONFIG, backbone_model=backbone)
    with pytest.raises(ValueError, match="describe data set 'mvtec', not finegrained.captions_dataset 'toy'"):
        m.setup_category("widget", supports)


def test_load_trained_is_called_on_the_class_and_needs_a_category():
    from fsadlib.protocol import Protocol

    protocol = Protocol(aux_dataset="visa_like", target_dataset="visa_like", selection="fixed")
    with pytest.raises(ValueError, match="a category is required"):
        FineGrainedAD.load_trained(protocol, 1, 0)
    with pytest.raises(FileNotFoundError, match="no finegrained model for visa_like/no_such_part k=1 seed=0"):
        FineGrainedAD.load_trained(protocol, 1, 0, category="no_such_part")


def test_training_reports_the_captions_of_the_data_set_it_trained_on(tmp_path, monkeypatch):
    """The training notebook checks every model's config against params.yaml + ``report.derived``: a
    FineGrainedAD model keeps the captions of the data set it trained on (params.yaml names none)."""
    import fsadlib.clip
    from fsadlib.methods.finegrained import train as fg_train
    from fsadlib.protocol import Protocol

    trained = []
    monkeypatch.setattr(fsadlib.clip, "ClipBackbone", lambda config: None)
    monkeypatch.setattr(fg_train, "_kept_history", lambda *args: None)
    monkeypatch.setattr(fg_train, "category_fingerprint", lambda *args: "")
    monkeypatch.setattr(fg_train, "train_category", lambda dataset, category, *args: trained.append((dataset, category))
                        or [{"epoch": 0, "train_loss": 1.0}])
    section = fg_train.FineGrainedSection(ks=(1,), model=dataclasses.replace(CONFIG, captions_dataset=""))
    protocol = Protocol(aux_dataset="visa_like", aux_categories=("pcb2",), target_dataset="visa_like",
                        target_categories=("pcb1",), selection="fixed")
    report = fg_train.train_finegrained(section, protocol, smoke=True, out_dir=tmp_path / "m", live_dir=tmp_path / "r")
    assert trained == [("visa_like", "pcb1")]
    assert report.derived == {"captions_dataset": "visa_like"}
    assert fg_train.model_config(section, "visa_like") == dataclasses.replace(section.model, **report.derived)


def test_captions_dataset_is_not_a_params_key(tmp_path):
    """The captions are those of the data set trained on: params.yaml naming one is refused, naming the key."""
    from fsadlib.config import load_section
    from fsadlib.methods.finegrained.train import FineGrainedSection

    params = tmp_path / "params.yaml"
    params.write_text("finegrained:\n  ks: [1]\n  model: {captions_dataset: mvtec}\n")
    with pytest.raises(ValueError, match=r"finegrained.model.captions_dataset \('mvtec'\) is not a parameter"):
        load_section("finegrained", FineGrainedSection, params)
    params.write_text("finegrained:\n  ks: [1]\n")
    assert load_section("finegrained", FineGrainedSection, params).model.captions_dataset == ""


def test_a_model_without_captions_dataset_needs_its_captions_given(backbone, supports):
    m = FineGrainedAD(dataclasses.replace(CONFIG, captions_dataset=""), backbone_model=backbone)
    with pytest.raises(ValueError, match="no captions for category 'widget': the model names no captions_dataset"):
        m.setup_category("widget", supports)
    m.set_captions(widget())
    m.setup_category("widget", supports)            # given captions of its category: ready
    assert m.category == "widget" and m.memory


def test_shot_and_caption_files_rewritten_unchanged_keep_the_model(tmp_path, monkeypatch):
    """make_shots and build_captions rewrite their files whenever anything of their data set changes
    (found on real MVTec AD: one changed test image retrained every FineGrainedAD model of the set): a
    model's fingerprint follows those files' content, and its shot images as before."""
    import os

    from fsadlib.captions import captions_path
    from fsadlib.io import write_json
    from fsadlib.layout import shot_file
    from fsadlib.methods.finegrained.train import FineGrainedSection, category_fingerprint

    monkeypatch.setenv("FSAD_ROOT", str(tmp_path))
    image = tmp_path / "data" / "toy" / "widget" / "000.png"
    image.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(image)

    def write_inputs(captions: Captions) -> None:
        """The two files as their stages write them, then one second later than before."""
        write_json(shot_file("toy", "widget", 1, 0), {"dataset": "toy", "category": "widget", "k": 1, "seed": 0,
                                                      "images": ["data/toy/widget/000.png"]})
        save_captions(captions_path("toy", "widget"), captions)
        for path in (shot_file("toy", "widget", 1, 0), captions_path("toy", "widget")):
            later = path.stat().st_mtime_ns + 1_000_000_000
            os.utime(path, ns=(later, later))

    def fingerprint() -> dict:
        section = FineGrainedSection(ks=(1,), model=dataclasses.replace(CONFIG, captions_dataset=""))
        return category_fingerprint("toy", "widget", 1, 0, section)

    write_inputs(widget())
    before = fingerprint()
    write_inputs(widget())
    assert fingerprint() == before                                   # rewritten unchanged: the model is kept
    write_inputs(Captions(**{**widget().__dict__, "caption": "a photo of a widget on a white background."}))
    assert fingerprint() != before                                   # other captions: retrained
    write_inputs(widget())
    assert fingerprint() == before
    later = image.stat().st_mtime_ns + 1_000_000_000
    os.utime(image, ns=(later, later))
    assert fingerprint() != before                                   # a shot image changed: retrained
