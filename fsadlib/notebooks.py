"""Build pipeline notebooks from cell sources, and check the notebook contract.

Contract of a notebook in ``notebooks/`` (checked by :func:`contract_problems`, tested for every
notebook by ``tests/notebooks``): kernel ``python3``; exactly one cell tagged ``parameters``, the
first code cell, holding only ``name = <scalar literal>`` lines; no outputs or execution counts; no
``def`` or ``class`` (the library holds the code); every ``assert`` carries a message. Build one with::

    from fsadlib.notebooks import md, write_notebook
    write_notebook("notebooks/15_make_shots.ipynb", "dataset = 'synthetic'",
                   [md("# Make k-shot files"), "from fsadlib import data", "data.make_shots(...)"])

Plain strings are code cells; :func:`md` makes a markdown cell. Cell ids are deterministic, so a
rebuilt notebook diffs cleanly. :func:`notebook_stages` reads which ``dvc.yaml`` stage runs which
notebook with which ``-p`` names (templates of ``foreach``/``matrix`` families once per stage file, by
family name), over ``dvc.yaml`` and the generated ``pipelines/<method folder>/dvc.yaml``.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import yaml
from nbformat import NotebookNode

from fsadlib.paths import repo_root

KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def md(text: str) -> NotebookNode:
    """A markdown cell."""
    return nbformat.v4.new_markdown_cell(text.strip())


def build_notebook(parameters: str, cells: Sequence[str | NotebookNode], title: str | None = None) -> NotebookNode:
    """A notebook: optional ``title`` markdown, the ``parameters`` cell, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNEL), "language_info": {"name": "python"}}
    params = nbformat.v4.new_code_cell(parameters.strip(), metadata={"tags": ["parameters"]})
    body = [md(title)] if title else []
    body += [params] + [c if isinstance(c, NotebookNode) else nbformat.v4.new_code_cell(c.strip()) for c in cells]
    for i, cell in enumerate(body):
        cell.id = f"cell-{i:02d}"
    nb.cells = body
    return nb


#: the evaluation a training or evaluation notebook runs for (its stage passes ``-p target``)
TARGET_PARAMETER = 'target = ""  # target data set of an evaluation in params.yaml protocol (empty: the first)'
#: every pipeline notebook's last parameter and first cell: where its models/, results/ and reports/ go
#: (the repo root under DVC; outside DVC, ``output_root`` else FSAD_OUTPUT_ROOT else scratch/)
OUTPUT_ROOT_PARAMETER = 'output_root = ""  # outside DVC: root of models/, results/, reports/ (default: scratch/)'
OUTPUT_ROOT_CELL = ("from fsadlib.paths import use_output_root\n\n"
                    'print(f"models/, results/ and reports/ of this run go under {use_output_root(output_root)}")')


def pipeline_notebook(parameters: str, cells: Sequence[str | NotebookNode], title: str | None = None
                      ) -> NotebookNode:
    """:func:`build_notebook` of a pipeline notebook: ``parameters`` + ``output_root``, then the cell
    that chooses and prints the output root (:func:`fsadlib.paths.use_output_root`), then ``cells``;
    so papermill or JupyterLab alone never overwrites what the DVC pipeline tracks."""
    return build_notebook(f"{parameters.rstrip()}\n{OUTPUT_ROOT_PARAMETER}", [OUTPUT_ROOT_CELL, *cells], title)


def write_notebook(path: str | Path, parameters: str, cells: Sequence[str | NotebookNode],
                   title: str | None = None) -> Path:
    """Build, check (``ValueError`` listing contract problems) and write a notebook."""
    return save_notebook(path, build_notebook(parameters, cells, title))


def save_notebook(path: str | Path, nb: NotebookNode) -> Path:
    """Check (``ValueError`` listing contract problems) and write ``nb``."""
    problems = contract_problems(nb)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def read_notebook(path: str | Path) -> NotebookNode:
    return nbformat.read(str(path), as_version=4)


def notebook_parameters(nb: NotebookNode | str | Path) -> dict[str, Any]:
    """``name -> literal value`` of the ``parameters`` cell ({} when there is none)."""
    nb = nb if isinstance(nb, NotebookNode) else read_notebook(nb)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        return {}
    values = {}
    for node in ast.parse(_python(cells[0].source)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def contract_problems(nb: NotebookNode | str | Path) -> list[str]:
    """Every way ``nb`` breaks the notebook contract (empty list: it complies)."""
    nb = nb if isinstance(nb, NotebookNode) else read_notebook(nb)
    problems = []
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as err:
        problems.append(f"invalid nbformat: {err.message}")
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"kernel is {kernel!r}, not 'python3'")
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{len(tagged)} cells tagged 'parameters' (need exactly 1)")
    elif tagged[0] != 0:
        problems.append("the 'parameters' cell is not the first code cell")
    else:
        problems += _parameter_problems(code[0].source)
    for i, cell in enumerate(code):
        if cell.get("outputs") or cell.get("execution_count") is not None:
            problems.append(f"code cell {i} has outputs or an execution count (commit without outputs)")
        try:
            tree = ast.parse(_python(cell.source))
        except SyntaxError as err:
            problems.append(f"code cell {i}: syntax error: {err.msg}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                problems.append(f"code cell {i} defines '{node.name}' (move code into fsadlib)")
            if isinstance(node, ast.Assert) and node.msg is None:
                problems.append(f"code cell {i} line {node.lineno}: assert without a message (say what failed)")
    return problems


def _parameter_problems(source: str) -> list[str]:
    """Each line of a parameters cell must be ``name = <scalar literal>`` that papermill itself reads
    (its parser gives up on a line whose comment holds ``=``: it then warns "Passed unknown parameter"
    on every run and ``papermill --help-notebook`` leaves the parameter out)."""
    from papermill.translators import PythonTranslator

    problems = []
    read_by_papermill = {p.name for p in PythonTranslator.inspect({"source": source})}
    for node in ast.parse(_python(source)).body:
        ok = isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        if ok:
            try:
                ok = isinstance(ast.literal_eval(node.value), (int, float, str, bool, type(None)))
            except ValueError:
                ok = False
        if not ok:
            problems.append(f"parameters cell line {node.lineno}: only 'name = <scalar literal>' is allowed")
        elif node.targets[0].id not in read_by_papermill:
            problems.append(f"parameters cell line {node.lineno}: papermill cannot read '{node.targets[0].id}' "
                            "(no '=' in its comment)")
    return problems


def _python(source: str) -> str:
    """Cell source with IPython magics and shell lines blanked (they are not Python)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


# -- the training notebook of a method folder -----------------------------------------------------
def training_notebook(spec: Any) -> NotebookNode:
    """The training notebook of a trainable method folder (a :class:`fsadlib.methods.MethodSpec`),
    the same for every method: its params section, :func:`fsadlib.methods.training.train_method`,
    the history table, the training curves and the invariants every training must meet."""
    import importlib

    if not spec.trainable:
        raise ValueError(f"method '{spec.name}' is training-free: it has no training notebook")
    number = NOTEBOOK_NAME.fullmatch(Path(spec.notebook).name)["number"]
    summary = (importlib.import_module(spec.package).__doc__ or spec.name).strip()
    cells = [
        md(f"{summary}\n\nParameters: the `{spec.name}` section of `params.yaml` and the evaluation of `target` "
           f"in its `protocol`{''.join(f', `{p}`' for p in spec.params)} (smoke = 1 applies the method's smoke "
           f"policy, `fsadlib/smoke.py`). Writes `models/{spec.name}/<target>/trained_on_<aux>/` and "
           f"`reports/train_{spec.name}/<target>/`; details in the method's README.md."),
        ("import dataclasses\n\nimport numpy as np\n\nfrom fsadlib.config import as_flag\n"
        "from fsadlib.data import figures\nfrom fsadlib.methods import method_spec\n"
         "from fsadlib.methods.base import load_checkpoint\n"
         "from fsadlib.methods.training import load_method_section, preview_training_data, train_method"),
        f"section = load_method_section(method_spec({spec.name!r}))\nsection",
        f"report = train_method({spec.name!r}, target=target, smoke=as_flag(smoke))\nreport.history",
        md("The training data: samples as the method's training batches make them (synthesised or augmented),"
           " the label mask as a translucent map with its contour in red."),
        (f"preview = preview_training_data({spec.name!r}, target=target, smoke=as_flag(smoke))\n"
         "figures.training_grid(preview) if preview is not None else None;"),
        md("Training curves: the training loss and every validation value per epoch."),
        "report.curves();",
        md("## Invariants"),
        ("missing = [str(path) for path in report.models if not path.is_file()]\n"
        "assert report.models and not missing, f\"models not written: {missing or 'none reported'}\"\n"
        "loss = report.history[\"train_loss\"]\n"
        "assert np.isfinite(loss).all(), f\"non-finite training loss in rows {report.history.index[~np.isfinite(loss)].tolist()}\"\n"
        "assert report.history.filter(like=\"val_auroc\").stack().between(0, 1).all(), \"validation AUROC out of [0, 1]\"\n"
        "expected = dataclasses.replace(section.model, **report.derived)  # params.yaml, but what the evaluation sets\n"
        "other = [str(p) for p in {report.models[0], report.models[-1]} if load_checkpoint(p).config != expected]\n"
        f"assert not other, f\"models whose config differs from params.yaml {spec.name}.model (+ {{report.derived}}): {{other}}\"\n"
         "print(f\"{len(report.models)} model file(s), {len(report.history)} history rows\")"),
    ]
    return pipeline_notebook(f"smoke = 0\n{TARGET_PARAMETER}", cells, title=f"# {number} Train {spec.name}")


# -- dvc.yaml stages that run notebooks ----------------------------------------------------------
PIPELINE_BLOCKS = range(10, 60)  # notebooks 1x-5x are pipeline stages; 6x are interactive
NOTEBOOK_NAME = re.compile(r"(?P<number>\d\d)_(?P<name>[a-z0-9]+(?:_[a-z0-9]+)*)\.ipynb")
_OPTIONS_WITH_VALUE = {"-k", "--kernel", "--cwd", "-y", "--parameters_yaml", "-f", "--parameters_file",
                       "-b", "--parameters_base64", "-l", "--language", "--engine", "--execution-timeout",
                       "--start-timeout"}


@dataclass(frozen=True)
class NotebookStage:
    name: str
    notebook: str
    output: str
    parameters: tuple[str, ...]
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]


def notebooks() -> list[Path]:
    return sorted((repo_root() / "notebooks").glob("*.ipynb"))


def is_pipeline_notebook(path: Path) -> bool:
    match = NOTEBOOK_NAME.fullmatch(path.name)
    return bool(match) and int(match["number"]) in PIPELINE_BLOCKS


def stage_files() -> list[Path]:
    """Every stage file: ``dvc.yaml`` and the method folders' ``pipelines/<folder>/dvc.yaml``."""
    root = repo_root()
    return [root / "dvc.yaml", *sorted((root / "pipelines").glob("*/dvc.yaml"))]


def stage_templates() -> list[tuple[str, dict]]:
    """(stage name, its template: the ``do`` of a ``foreach``, else the stage itself) of every stage
    file; a family generated for several method folders (``evaluate``) appears once per file."""
    found = []
    for path in stage_files():
        stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
        found += [(name, spec.get("do", spec)) for name, spec in stages.items()]
    return found


def notebook_stages() -> list[NotebookStage]:
    """Every stage whose command runs papermill (one entry per stage or stage family and file)."""
    found = []
    for name, spec in stage_templates():
        cmd = " ".join(spec["cmd"]) if isinstance(spec.get("cmd"), list) else str(spec.get("cmd", ""))
        tokens = shlex.split(cmd)
        if "papermill" not in tokens:
            continue
        positional, parameters = [], []
        i = tokens.index("papermill") + 1
        while i < len(tokens) and tokens[i] not in ("&&", ";", "||"):
            token = tokens[i]
            if token in ("-p", "--parameters", "-r", "--parameters_raw"):
                parameters.append(tokens[i + 1])
                i += 3
            elif token in _OPTIONS_WITH_VALUE:
                i += 2
            elif token.startswith("-"):
                i += 1
            else:
                positional.append(token)
                i += 1
        found.append(NotebookStage(name, positional[0], positional[1], tuple(parameters), cmd,
                                   tuple(_paths(spec.get("deps"))), tuple(_paths(spec.get("outs")))))
    return found


def _paths(entries: list | None) -> list[str]:
    """Paths of a deps/outs list (plain strings or ``{path: options}`` mappings)."""
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []]
