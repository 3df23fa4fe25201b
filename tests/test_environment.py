"""environment.yml (conda) installs python and exactly the pip pins of requirements.txt plus the package."""

from __future__ import annotations

import re

import yaml

from fsadlib.paths import repo_root


def test_environment_yml_points_at_requirements():
    env = yaml.safe_load((repo_root() / "environment.yml").read_text())
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert len(python) == 1 and re.fullmatch(r"python[=>]+3\.(1[1-9])", python[0].replace(" ", ""))
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.txt" in pip and "-e ." in pip
    assert "pip" in deps
    requirements = (repo_root() / "requirements.txt").read_text().splitlines()
    pins = [r for r in requirements if r.strip() and not r.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][^\s]*", p) for p in pins), "exact pins only"
