"""MFSC captions: schema round trip and validation, offline captioner on drawn shapes, splitting,
VLM captioners against a fake OpenAI-compatible server on 127.0.0.1 and a fake transformers pipeline."""

from __future__ import annotations

import json
import sys
import threading
import types
import warnings
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from fsadlib.captions import (
    Captions,
    CaptionsConfig,
    OfflineCaptioner,
    VlmConfig,
    build_captions,
    caption_table,
    describe_image,
    load_captions,
    read_captions,
    save_captions,
    split_to_fit,
)
from fsadlib.captions.vlm import PROMPT_VERSION, VlmCaptioner, http_chat, transformers_chat
from fsadlib.captions.vocab import GENERIC_ANOMALY_PHRASES

GRAY = (128, 128, 128)


def draw(shapes, size: int = 128, bg=GRAY) -> Image.Image:
    """Flat-colour shapes on a plain background: ("disc" | "square" | "triangle", box, rgb)."""
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    for kind, box, rgb in shapes:
        {"disc": d.ellipse, "square": d.rectangle, "triangle": d.polygon}[kind](box, fill=rgb)
    return im


def as_array(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float32) / 255


RED, BLUE, GREEN = (220, 30, 30), (30, 60, 220), (30, 170, 40)
THREE_KINDS = [("disc", (10, 10, 40, 40), RED), ("square", (70, 20, 100, 50), BLUE),
               ("triangle", [(20, 110), (60, 110), (40, 75)], GREEN)]


def sample_captions() -> Captions:
    return Captions(dataset="toy", category="widget", class_name="widget", foreground="widget",
                    background="black", entity=("cap", "body"), number=("one", "two"), location=("top", "center"),
                    relation="the cap is above the body", color=("red", "blue"), texture=("smooth", "matte"),
                    shape=("round", "square"), entity_caption=("a red cap at the top", "two blue body parts at the center"),
                    caption="a photo of a widget on a black background.",
                    anomaly_phrases=("{} with hole", "broken {}"), source={"captioner": "hand"})


def test_schema_round_trip(tmp_path):
    c = sample_captions()
    path = save_captions(tmp_path / "toy" / "widget.json", c)
    back = read_captions(path)
    assert back == c and back.source == c.source
    assert json.loads(path.read_text())["Level_2"]["entity"] == ["cap", "body"]
    assert load_captions("toy", "widget", root=tmp_path) == c


@pytest.mark.parametrize("edit, key", [
    (lambda d: d["Level_3"]["color"].pop(), "Level_3.color"),
    (lambda d: d["Level_2"].pop("relation"), "Level_2.relation"),
    (lambda d: d.__setitem__("caption", "no noun here"), "foreground noun"),
    (lambda d: d["Level_3"]["entity_caption"].__setitem__(0, "a red cap"), "location 'top'"),
    (lambda d: d.__setitem__("anomaly_phrases", ["broken"]), "anomaly_phrases"),
])
def test_invalid_file_names_file_and_key(tmp_path, edit, key):
    data = sample_captions().to_json()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=key) as err:
        read_captions(path)
    assert str(path) in str(err.value)


def test_missing_caption_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_captions("toy", "nothing", root=tmp_path)


def test_offline_counts_three_drawn_objects():
    desc = describe_image(as_array(draw(THREE_KINDS)))
    assert not desc.is_texture and desc.background == "gray"
    got = sorted((e.color, e.shape, e.count) for e in desc.entities)
    assert got == [("blue", "square", 1), ("green", "triangular", 1), ("red", "round", 1)]
    assert all(e.texture == "smooth" for e in desc.entities)


def test_offline_groups_equal_parts_into_one_entity_with_a_number(tmp_path):
    im = draw([("disc", (8, 8, 38, 38), RED), ("disc", (85, 85, 115, 115), RED), ("square", (80, 10, 110, 40), BLUE)])
    im.save(tmp_path / "a.png")
    c = OfflineCaptioner()([str(tmp_path / "a.png")], "toy", "widget", "widget", ("{} with hole",))
    assert c.n_entities == 2
    assert dict(zip(c.shape, c.number)) == {"round": "two", "square": "one"}
    assert c.location[c.shape.index("square")] == "top right"
    assert c.source["reference_image"] == str(tmp_path / "a.png") and c.source["entity_counts"] == [2]


def test_offline_texture_has_one_flat_entity_and_no_background():
    noise = np.random.default_rng(0).random((128, 128, 3)).astype(np.float32)
    desc = describe_image(noise)
    assert desc.is_texture and desc.background == "no" and len(desc.entities) == 1
    assert desc.entities[0].shape == "flat"


def test_offline_reference_is_the_most_frequent_entity_count(tmp_path):
    paths = []
    for i, shapes in enumerate([THREE_KINDS[:1], THREE_KINDS, THREE_KINDS]):
        draw(shapes).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    c = OfflineCaptioner()(paths, "toy", "widget", "widget", ("{} with hole",))
    assert c.source["entity_counts"] == [1, 3, 3] and c.source["reference_image"] == paths[1]


def test_offline_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        OfflineCaptioner()([str(bad)], "toy", "widget", "widget", ("{} with hole",))


def test_split_to_fit_splits_at_sentences_and_warns():
    words = lambda t: len(t.split())
    text = "one two three. four five six. seven eight nine ten eleven"
    assert split_to_fit("short text", words, 5) == ["short text"]
    with pytest.warns(UserWarning, match="split into 3 pieces"):
        pieces = split_to_fit(text, words, 5)
    assert pieces == ["one two three.", "four five six.", "seven eight nine ten eleven"]
    assert " ".join(pieces) == text  # nothing cut
    with pytest.warns(UserWarning):
        assert split_to_fit("a b c d e f g", words, 3) == ["a b c", "d e f", "g"]


def test_build_captions_over_a_samples_table(tmp_path):
    rows = []
    for cat, shapes in (("one", THREE_KINDS[:1]), ("three", THREE_KINDS)):
        for i in range(2):
            path = tmp_path / cat / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            draw(shapes).save(path)
            rows.append({"dataset": "toy", "category": cat, "split": "train", "label": 0, "defect": "good",
                             "image_path": str(path), "mask_path": ""})
    samples = pd.DataFrame(rows)
    written = build_captions("toy", ["one", "three"], CaptionsConfig(), root=tmp_path / "captions", samples=samples)
    got = {c: load_captions("toy", c, root=tmp_path / "captions") for c in written}
    assert got["one"].n_entities == 1 and got["three"].n_entities == 3
    assert got["one"].anomaly_phrases == GENERIC_ANOMALY_PHRASES  # generic phrases for an unknown category
    table = caption_table(list(got.values()))
    assert set(table["category"]) == {"one", "three"}
    with pytest.raises(KeyError, match="nope"):
        build_captions("toy", ["nope"], CaptionsConfig(), root=tmp_path / "captions", samples=samples)


VLM_ANSWER = {"Level_1": {"foreground": "widget", "background": "black"},
              "Level_2": {"entity": ["cap"], "number": ["one"], "location": ["top"], "relation": "a cap on top"},
              "Level_3": {"color": ["red"], "texture": ["smooth"], "shape": ["round"],
                          "entity_caption": ["a red cap at the top"]},
              "caption": "a widget with a red cap on a black background"}


class _FakeOpenAI(BaseHTTPRequestHandler):
    requests: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, dict(self.headers), body))
        text = "```json\n" + json.dumps(VLM_ANSWER) + "\n```"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_http_captioner_against_fake_server(tmp_path, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        draw(THREE_KINDS).save(tmp_path / "ref.png")
        monkeypatch.setenv("FAKE_KEY", "sk-test")
        cfg = VlmConfig(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="fake-vlm", api_key_env="FAKE_KEY")
        c = VlmCaptioner(http_chat(cfg), cfg, "http")([str(tmp_path / "ref.png")], "toy", "widget", "widget",
                                                       ("{} with hole",))
    finally:
        server.shutdown()
    path, headers, body = _FakeOpenAI.requests[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "fake-vlm" and body["messages"][0]["role"] == "system"
    image_part = body["messages"][1]["content"][1]
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert c.entity == ("cap",) and c.foreground == "widget" and c.anomaly_phrases == ("{} with hole",)
    assert c.source["model"] == "fake-vlm" and c.source["prompt_version"] == PROMPT_VERSION


def test_http_captioner_unreachable_endpoint_names_url(tmp_path):
    draw(THREE_KINDS).save(tmp_path / "ref.png")
    cfg = VlmConfig(base_url="http://127.0.0.1:9/v1?key=secret", timeout=2, retries=2, backoff=0.5)
    waits = []
    with pytest.raises(ConnectionError, match=r"127.0.0.1:9/v1/chat/completions failed after 3 attempt") as err:
        VlmCaptioner(http_chat(cfg, sleep=waits.append), cfg, "http")([str(tmp_path / "ref.png")], "toy", "w", "w",
                                                                      ("{} x",))
    assert waits == [0.5, 1.0] and "secret" not in str(err.value)


def test_vlm_answer_spelling_content_null_and_no_credentials_in_files(tmp_path):
    draw(THREE_KINDS).save(tmp_path / "ref.png")
    loose = json.loads(json.dumps(VLM_ANSWER))
    loose["Level_1"]["foreground"] = "Widget"
    loose["Level_2"].update(entity=["Red-Cap"], location=["top-left"])
    loose["Level_3"]["entity_caption"] = ["a red cap at the Top Left"]
    cfg = VlmConfig(base_url="https://user:pw@api.example.com/v1?api_key=sk-1#x")
    c = VlmCaptioner(lambda messages, image: json.dumps(loose), cfg, "http")(
        [str(tmp_path / "ref.png")], "toy", "widget", "widget", ("{} x",))
    assert c.caption.startswith("a Widget with") and c.entity_caption == ("a Red-Cap at the top-left",)
    assert c.source["endpoint"] == "https://api.example.com/v1"
    assert "pw" not in json.dumps(c.to_json()) and "sk-1" not in json.dumps(c.to_json())
    with pytest.raises(ValueError, match="toy/widget: no content .*category 'widget'"):
        VlmCaptioner(lambda messages, image: None, cfg, "http")([str(tmp_path / "ref.png")], "toy", "widget",
                                                               "widget", ("{} x",))


def test_transformers_captioner_with_fake_pipeline(tmp_path, monkeypatch):
    calls = {}

    def pipeline(task, model, device_map):
        calls["init"] = (task, model)

        def run(text, **kwargs):
            calls["turns"] = text
            return [{"generated_text": json.dumps(VLM_ANSWER)}]
        return run

    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(pipeline=pipeline))
    draw(THREE_KINDS).save(tmp_path / "ref.png")
    cfg = VlmConfig(model="local/vlm")
    c = VlmCaptioner(transformers_chat(cfg), cfg, "transformers")([str(tmp_path / "ref.png")], "toy", "widget",
                                                                   "widget", ("{} with hole",))
    assert calls["init"] == ("image-text-to-text", "local/vlm")
    assert calls["turns"][-1]["content"][0]["type"] == "image"
    assert c.caption == VLM_ANSWER["caption"]


def test_invalid_vlm_answer_is_rejected(tmp_path):
    draw(THREE_KINDS).save(tmp_path / "ref.png")
    bad = {**VLM_ANSWER, "caption": "no noun"}
    captioner = VlmCaptioner(lambda messages, image: json.dumps(bad), VlmConfig(), "http")
    with warnings.catch_warnings(), pytest.raises(ValueError, match="foreground noun"):
        captioner([str(tmp_path / "ref.png")], "toy", "widget", "widget", ("{} x",))
