"""MFSC captions from a vision-language model: an OpenAI-compatible HTTP endpoint or local transformers.

FineGrainedAD's captions come from an MLLM (GPT-4o) shown one normal image per category with a
curated system prompt that the authors did not publish. Here the prompt is versioned in code
(``SYSTEM_PROMPT``, its SHA-1 and ``PROMPT_VERSION`` are recorded in every caption file with the
model, endpoint, temperature and image path), and the answer must be the JSON levels of
:mod:`fsadlib.captions.schema`, validated before it is written.

Backends (``captions.captioner`` in params.yaml):
- ``http``: POST ``{base_url}/chat/completions`` (OpenAI chat format, image as a base64 PNG data URL;
  works with OpenAI, vLLM, ``transformers serve``, Ollama's OpenAI route ...). The API key is read
  from the environment variable named by ``api_key_env`` (never from params.yaml).
- ``transformers``: a local ``transformers`` ``image-text-to-text`` pipeline on ``model`` (a hub id
  or a folder; needs the ``transformers`` package, not in requirements.txt).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from fsadlib.captions.schema import Captions
from fsadlib.data.files import resolve_path

PROMPT_VERSION = "mfsc-1"
SYSTEM_PROMPT = """You describe a NORMAL (defect-free) product image for industrial anomaly detection.
Describe it at three levels and answer with ONE JSON object, nothing else:
{"Level_1": {"foreground": <noun of the object, exactly the class name given>,
             "background": <one or two words, e.g. "black", "white paper", "no" for a texture>},
 "Level_2": {"entity": [<name of each distinct component type, 1 to 5 items>],
             "number": [<count word of each component: "one", "two", ...>],
             "location": [<where each component is: "top left", "top", "top right", "left", "center",
                           "right", "bottom left", "bottom", "bottom right" or "whole image">],
             "relation": <one sentence on how the components are arranged>},
 "Level_3": {"color": [<one colour word per component>], "texture": [<one texture word per component>],
             "shape": [<one shape word per component>],
             "entity_caption": [<one short phrase per component that contains its entity name and its
                                 location word verbatim>]},
 "caption": <one or two sentences describing the whole image; must contain the foreground noun>}
All lists have one item per component, in the same order. Keep every caption under 60 words."""


@dataclass(frozen=True)
class VlmConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout: float = 120.0


ChatFn = Callable[[list[dict[str, Any]], Image.Image], str]


def image_data_url(image: Image.Image) -> str:
    """``data:image/png;base64,...`` of an RGB image."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def http_chat(config: VlmConfig) -> ChatFn:
    """A chat function posting to an OpenAI-compatible ``/chat/completions`` endpoint."""
    url = config.base_url.rstrip("/") + "/chat/completions"

    def chat(messages: list[dict[str, Any]], image: Image.Image) -> str:
        user = messages[-1]
        content = [{"type": "text", "text": user["content"]},
                   {"type": "image_url", "image_url": {"url": image_data_url(image)}}]
        body = {"model": config.model, "temperature": config.temperature, "max_tokens": config.max_tokens,
                "messages": [*messages[:-1], {"role": "user", "content": content}]}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=config.timeout) as resp:
                answer = json.loads(resp.read().decode())
        except urllib.error.URLError as err:
            raise ConnectionError(f"captions.http: request to {url} failed: {err}") from err
        try:
            return answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(f"captions.http: unexpected answer from {url}: {str(answer)[:300]}") from err
    return chat


def transformers_chat(config: VlmConfig) -> ChatFn:
    """A chat function over a local ``transformers`` image-text-to-text pipeline (loaded once)."""
    try:
        from transformers import pipeline
    except ImportError as err:
        raise ImportError("captions.captioner 'transformers' needs the transformers package "
                          "(pip install transformers), or serve the model over HTTP and use 'http'") from err
    pipe = pipeline("image-text-to-text", model=config.model, device_map="auto")

    def chat(messages: list[dict[str, Any]], image: Image.Image) -> str:
        user = messages[-1]
        turns = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in messages[:-1]]
        turns.append({"role": "user", "content": [{"type": "image", "image": image},
                                                  {"type": "text", "text": user["content"]}]})
        out = pipe(text=turns, max_new_tokens=config.max_tokens, return_full_text=False,
                   generate_kwargs={"do_sample": config.temperature > 0, **(
                       {"temperature": config.temperature} if config.temperature > 0 else {})})
        return out[0]["generated_text"]
    return chat


class VlmCaptioner:
    """Ask a VLM for the MFSC levels of the first image of a category; validate and return them."""

    def __init__(self, chat: ChatFn, config: VlmConfig, backend: str) -> None:
        self.chat, self.config, self.name = chat, config, backend

    def __call__(self, image_paths: list[str], dataset: str, category: str, class_name: str,
                 anomaly_phrases: tuple[str, ...]) -> Captions:
        if not image_paths:
            raise ValueError(f"{self.name} captioner: no normal images for {dataset}/{category}")
        path = resolve_path(image_paths[0])
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        with Image.open(path) as im:
            image = im.convert("RGB")
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": f"Class name: {class_name}. Describe this normal {class_name}."}]
        text = self.chat(messages, image)
        levels = parse_json_answer(text, f"{self.name} answer for {dataset}/{category}")
        source = {"captioner": self.name, "model": self.config.model, "temperature": self.config.temperature,
                  "prompt_version": PROMPT_VERSION, "prompt_sha1": hashlib.sha1(SYSTEM_PROMPT.encode()).hexdigest(),
                  "images": [str(image_paths[0])], "reference_image": str(image_paths[0]), "raw_answer": text}
        if self.name == "http":
            source["endpoint"] = self.config.base_url
        data = {**levels, "dataset": dataset, "category": category, "class_name": class_name,
                "anomaly_phrases": list(anomaly_phrases), "source": source}
        return Captions.from_json(data, where=f"{self.name} answer for {dataset}/{category}")


def parse_json_answer(text: str, where: str) -> dict[str, Any]:
    """The JSON object in a model answer (tolerates ```json fences and text around it)."""
    match = re.search(r"\{.*\}", text, flags=re.DOTALL)
    if match is None:
        raise ValueError(f"{where}: no JSON object in {text[:200]!r}")
    try:
        return json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: invalid JSON ({err}) in {text[:200]!r}") from err
