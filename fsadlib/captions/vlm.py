"""MFSC captions from a vision-language model: an OpenAI-compatible HTTP endpoint or local transformers.

FineGrainedAD's captions come from an MLLM (GPT-4o) shown one normal image per category with a
curated system prompt that the authors did not publish. Here the prompt is versioned in code
(``SYSTEM_PROMPT``, its SHA-1 and ``PROMPT_VERSION`` are recorded in every caption file with the
model, endpoint, temperature and image path), and the answer must be the JSON levels of
:mod:`fsadlib.captions.schema`, validated before it is written.

Backends (``captions.captioner`` in params.yaml):
- ``http``: POST ``{base_url}/chat/completions`` (OpenAI chat format, image as a base64 PNG data URL;
  works with OpenAI, vLLM, ``transformers serve``, Ollama's OpenAI route ...). The API key is read
  from the environment variable named by ``api_key_env`` (never from params.yaml). Unreachable
  endpoints, HTTP 429 and 5xx answers are retried ``retries`` times with exponential backoff
  (``backoff`` seconds, doubled each time). The endpoint recorded in caption files has no user,
  password, query or fragment (no credential from ``base_url`` is written).

Answers name entities loosely ("Hazelnut" in the fields, "hazelnut" in the caption; "top-left" for
"top left"): :func:`align_spellings` rewrites the caption texts to the fields' spelling where they
match up to case and hyphen/space, so MLLP's verbatim replacements work; anything else is rejected.
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
import time
import urllib.error
import urllib.parse
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
    retries: int = 3          # attempts after the first one (unreachable, 429, 5xx)
    backoff: float = 2.0      # seconds before the first retry, doubled each time


ChatFn = Callable[[list[dict[str, Any]], Image.Image], "str | None"]
RETRY_STATUS = (429, 500, 502, 503, 504)


def public_endpoint(url: str) -> str:
    """``url`` without user, password, query and fragment (what a caption file may record)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def image_data_url(image: Image.Image) -> str:
    """``data:image/png;base64,...`` of an RGB image."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def http_chat(config: VlmConfig, sleep: Callable[[float], None] = time.sleep) -> ChatFn:
    """A chat function posting to an OpenAI-compatible ``/chat/completions`` endpoint (retries: module
    docstring). Returns the message content, ``None`` when the answer's content is null."""
    base = urllib.parse.urlsplit(config.base_url)
    url = urllib.parse.urlunsplit(base._replace(path=base.path.rstrip("/") + "/chat/completions", fragment=""))
    shown = public_endpoint(url)

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
        for attempt in range(config.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=config.timeout) as resp:
                    answer = json.loads(resp.read().decode())
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                retry = not isinstance(err, urllib.error.HTTPError) or err.code in RETRY_STATUS
                if not retry or attempt == config.retries:
                    raise ConnectionError(f"captions.http: request to {shown} failed after {attempt + 1} "
                                          f"attempt(s): {err}") from err
                sleep(config.backoff * 2 ** attempt)
        try:
            return answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(f"captions.http: unexpected answer from {shown}: {str(answer)[:300]}") from err
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
        if not text:
            raise ValueError(f"{self.name} answer for {dataset}/{category}: no content (content: null or empty) "
                             f"from model {self.config.model!r}; nothing to caption category '{category}' with")
        levels = align_spellings(parse_json_answer(text, f"{self.name} answer for {dataset}/{category}"))
        source = {"captioner": self.name, "model": self.config.model, "temperature": self.config.temperature,
                  "prompt_version": PROMPT_VERSION, "prompt_sha1": hashlib.sha1(SYSTEM_PROMPT.encode()).hexdigest(),
                  "images": [str(image_paths[0])], "reference_image": str(image_paths[0]), "raw_answer": text}
        if self.name == "http":
            source["endpoint"] = public_endpoint(self.config.base_url)
        data = {**levels, "dataset": dataset, "category": category, "class_name": class_name,
                "anomaly_phrases": list(anomaly_phrases), "source": source}
        return Captions.from_json(data, where=f"{self.name} answer for {dataset}/{category}")


def align_to(word: str, text: str) -> str:
    """``text`` with the first match of ``word`` up to case and hyphen/space ("Top-Left" ~ "top left")
    rewritten as ``word``; unchanged when it already contains ``word`` or has no such match."""
    if not isinstance(word, str) or not isinstance(text, str) or not word.strip() or word in text:
        return text
    pattern = r"[-\s]+".join(re.escape(part) for part in re.split(r"[-\s]+", word.strip()))
    match = re.search(pattern, text, flags=re.IGNORECASE)
    return text if match is None else text[:match.start()] + word + text[match.end():]


def align_spellings(levels: dict[str, Any]) -> dict[str, Any]:
    """A parsed answer whose caption and entity captions spell the foreground, entity names and
    locations as the fields do (case and hyphen/space variants only; see :func:`align_to`)."""
    out = json.loads(json.dumps(levels))
    l1, l2, l3 = out.get("Level_1"), out.get("Level_2"), out.get("Level_3")
    if isinstance(l1, dict) and "caption" in out:
        out["caption"] = align_to(l1.get("foreground"), out["caption"])
    if isinstance(l2, dict) and isinstance(l3, dict) and isinstance(l3.get("entity_caption"), list):
        texts = l3["entity_caption"]
        for key in ("entity", "location"):
            words = l2.get(key)
            if isinstance(words, list) and len(words) == len(texts):
                texts = [align_to(w, t) for w, t in zip(words, texts)]
        l3["entity_caption"] = texts
    return out


def parse_json_answer(text: str, where: str) -> dict[str, Any]:
    """The JSON object in a model answer (tolerates ```json fences and text around it)."""
    match = re.search(r"\{.*\}", text, flags=re.DOTALL)
    if match is None:
        raise ValueError(f"{where}: no JSON object in {text[:200]!r}")
    try:
        return json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: invalid JSON ({err}) in {text[:200]!r}") from err
