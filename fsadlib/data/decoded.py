"""A decoded-image cache: each image file decoded and brought to the model's geometry once, kept as
uint8 on disk and memory-mapped back, shared by every method, stage and run that asks for it.

An entry is one file ``<root>/<transform key>/<sha1 of the source path>.u8`` (:func:`default_cache`:
``<repo>/.cache/decoded``, or the folder ``FSAD_DECODE_CACHE`` names, ``off`` for none): a 64-byte header, then the
pixels, C order. Header (little-endian): magic ``FSADDEC1``, the source file's size and ``st_mtime_ns``,
the array's shape (height, width, channels) and the XXH3-64 digest of the pixels (``xxhash``: about
25x faster than CRC-32 here, so checking an entry on every read costs little next to copying it). ``transform key`` names what
the pixels depend on besides the file (the image-mode rule, the geometry, the size; the caller's
string, hashed to a folder name; :func:`transform_key`).

Lookup of a source file: its entry is used when the header's magic, shape, file size and mtime match
the source file now and the digest of the pixels matches; otherwise the source is decoded again
(``decode(path) -> uint8 [H, W, C]``) and the entry rewritten atomically (temporary file, then rename).
Touching a source file therefore invalidates its entry only, and a truncated or corrupted entry is
rebuilt, never trusted. Concurrent writers of one entry write the same bytes; the last rename wins.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xxhash

from fsadlib.data.files import resolve_path
from fsadlib.io import atomic_path
from fsadlib.paths import repo_root

#: environment variable naming the cache folder (``off``: no cache, every image decoded each time)
CACHE_ENV = "FSAD_DECODE_CACHE"

MAGIC = b"FSADDEC2"
#: magic, source size, source mtime_ns, height, width, channels, XXH3-64 of the pixels; padded to HEADER_BYTES
_HEADER = struct.Struct("<8sqqiiiQ")
HEADER_BYTES = 64


def default_cache() -> DecodedCache | None:
    """The decoded-image cache of this checkout: ``<repo>/.cache/decoded``, or the folder named by
    ``FSAD_DECODE_CACHE``; ``None`` when that says ``off``."""
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() == "off":
        return None
    return DecodedCache(Path(value) if value else repo_root() / ".cache" / "decoded")


def transform_key(*parts: object) -> str:
    """A folder name for the transform described by ``parts`` (sha1 of their text, 16 hex digits)."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


class DecodedCache:
    """The cache under ``root`` (module docstring); ``hits`` and ``misses`` count lookups."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def entry_path(self, source: Path, key: str) -> Path:
        """The entry file of ``source`` (resolved) under transform ``key``."""
        return self.root / key / f"{hashlib.sha1(str(source).encode()).hexdigest()}.u8"

    def get(self, path: str | Path, key: str, decode: Callable[[Path], np.ndarray]) -> np.ndarray:
        """uint8 [H, W, C] of ``path`` under transform ``key``: the entry when valid, else ``decode(path)``
        (stored for next time). The array is read-only when it comes from the entry."""
        source = resolve_path(path)
        try:
            stat = source.stat()
        except FileNotFoundError as err:
            raise FileNotFoundError(f"image file not found: {source}") from err
        entry = self.entry_path(source, key)
        pixels = read_entry(entry, stat.st_size, stat.st_mtime_ns)
        if pixels is not None:
            self.hits += 1
            return pixels
        self.misses += 1
        pixels = np.ascontiguousarray(decode(source), dtype=np.uint8)
        write_entry(entry, pixels, stat.st_size, stat.st_mtime_ns)
        return pixels


def read_entry(entry: Path, size: int, mtime_ns: int) -> np.ndarray | None:
    """The pixels of ``entry`` (memory-mapped, read-only) when it is whole and was made from a source
    of this ``size`` and ``mtime_ns``; ``None`` otherwise (missing, stale, truncated or corrupt)."""
    try:
        with open(entry, "rb") as fh:
            header = fh.read(HEADER_BYTES)
        length = entry.stat().st_size
    except OSError:
        return None
    if len(header) != HEADER_BYTES:
        return None
    magic, src_size, src_mtime, height, width, channels, digest = _HEADER.unpack_from(header)
    shape = (height, width, channels)
    if magic != MAGIC or (src_size, src_mtime) != (size, mtime_ns) or min(shape) < 1 \
            or length != HEADER_BYTES + height * width * channels:
        return None
    pixels = np.memmap(entry, dtype=np.uint8, mode="r", offset=HEADER_BYTES, shape=shape)
    return pixels if pixel_digest(pixels) == digest else None


def pixel_digest(pixels: np.ndarray) -> int:
    """XXH3-64 of the bytes of ``pixels`` (C order) as an unsigned 64-bit integer."""
    return xxhash.xxh3_64_intdigest(np.ascontiguousarray(pixels))


def write_entry(entry: Path, pixels: np.ndarray, size: int, mtime_ns: int) -> None:
    """Write ``pixels`` (uint8 [H, W, C]) as the entry of a source of ``size`` and ``mtime_ns``, atomically."""
    header = _HEADER.pack(MAGIC, size, mtime_ns, *pixels.shape, pixel_digest(pixels)).ljust(HEADER_BYTES, b"\0")
    with atomic_path(entry, suffix=".u8") as tmp, open(tmp, "wb") as fh:
        fh.write(header)
        fh.write(pixels.tobytes())
