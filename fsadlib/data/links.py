"""Real data under DVC: refuse symbolic links under ``data/real`` instead of letting DVC mangle them.

DVC does not follow a symlinked folder inside a tracked directory (it is silently left out of
``data.dvc``) and replaces a symlinked file by a copy when it commits (doubling the data through the
cache). So every data-set root under ``data/real`` is checked before it is read
(:func:`refuse_links`, called by :func:`fsadlib.data.samples.read_samples`), and ``make data`` /
``make run`` run this check before DVC sees the folder (``dvc commit -f data.dvc`` / ``dvc repro``;
``dvc repro`` called directly re-commits ``data.dvc`` first, converting links, which is why the
Makefile checks before). Data that lives elsewhere (a shared disk) is configured by its absolute
path as the data set's ``root``: DVC then tracks it as an external dependency of the stages that read
it (by content hash, without copying it into the cache).

``python -m fsadlib.data.links [folder]`` checks ``folder`` (default ``data/real``) and exits 1 with the
message when it holds links.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fsadlib.paths import data_dir

ADVICE = ("DVC would leave a linked folder out of data.dvc and replace a linked file by a copy. Either move "
          "the data into data/real/<name>, or keep it where it is and give its absolute path as "
          "params.yaml datasets.<name>.root (DVC then tracks it as an external dependency, by hash, "
          "without copying it).")


def real_data_dir() -> Path:
    return data_dir() / "real"


def linked_entries(folder: Path) -> list[Path]:
    """Symbolic links at or under ``folder`` (not followed), and linked folders between
    ``data/real`` and ``folder``; sorted."""
    folder = Path(os.path.abspath(folder))
    real = Path(os.path.abspath(real_data_dir()))
    found = [p for p in [folder, *folder.parents] if p.is_relative_to(real) and p != real and p.is_symlink()]
    if folder.is_dir() and not folder.is_symlink():
        for base, dirs, files in os.walk(folder):
            found += [Path(base) / name for name in dirs + files if (Path(base) / name).is_symlink()]
    return sorted(found)


def refuse_links(root: Path) -> None:
    """``ValueError`` naming the first links when ``root`` lies under ``data/real`` and holds or is one."""
    absolute = Path(os.path.abspath(root))
    if not absolute.is_relative_to(Path(os.path.abspath(real_data_dir()))):
        return
    links = linked_entries(absolute)
    if links:
        shown = ", ".join(f"{p} -> {os.readlink(p)}" for p in links[:3])
        raise ValueError(f"{root}: symbolic links under data/real ({len(links)}: {shown}). {ADVICE}")


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else real_data_dir()
    links = linked_entries(folder)
    for path in links:
        print(f"symbolic link: {path} -> {os.readlink(path)}", file=sys.stderr)
    if links:
        print(ADVICE, file=sys.stderr)
    return int(bool(links))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
