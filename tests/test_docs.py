"""The documents cite only what exists: every repository path and every ``unime_v2`` name that README.md,
RESULTS.md, BENCHMARKS.md and docs/*.md mention.

* A path is a word that starts with one of the repository's folders (``data_builders/mining/records.py``,
  ``examples/configs/…yaml``, ``docs/x.md``), or a relative markdown link target; paths are relative to the
  repository root, links to the document's folder. ``{a,b}`` alternatives and ``*`` globs must all match, a
  ``<placeholder>`` or ``...`` only needs what comes before it, and ``file.py::name`` needs ``name`` defined in the
  file. A path inside another path or an address (``VLM2Vec/examples/…``: another repository's file) is not ours.
* A name is a dotted ``unime_v2.x.y`` or ``unime_v2.x.y.Name`` (imported, then looked up attribute by attribute),
  and every name of a ``from unime_v2.x import A, B`` line.
"""

from __future__ import annotations

import importlib
import itertools
import re
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([REPO / "README.md", REPO / "RESULTS.md", REPO / "BENCHMARKS.md", *(REPO / "docs").glob("*.md")])
FOLDERS = ("data_builders", "trainers", "modeling_unime_v2", "hub_cards", "examples", "docs", "tests", "benchmarks")
PATH = re.compile(rf"(?<![\w/.:\-])((?:{'|'.join(FOLDERS)})/[^\s`'\"()\[\]|]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOTTED = re.compile(r"(?<![\w./])unime_v2(?:\.\w+)+")
FILE_SUFFIXES = ("yaml", "yml", "json", "jsonl", "md", "py", "txt", "png", "log")
"""``unime_v2.yaml`` is a file name, not a module."""
FROM_IMPORT = re.compile(r"from\s+(unime_v2(?:\.\w+)*)\s+import\s+(\([^)]*\)|[^\n`|]+)")


def expand_braces(path: str) -> list[str]:
    """``a{1,2}.{json,log}`` -> the four paths it stands for."""
    pieces = re.split(r"\{([^{}]*)\}", path)
    options = [[piece] if i % 2 == 0 else piece.split(",") for i, piece in enumerate(pieces)]
    return ["".join(choice) for choice in itertools.product(*options)]


def defines(file: Path, name: str) -> bool:
    pattern = rf"^\s*(?:def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*[:=]"
    return bool(re.search(pattern, file.read_text(), re.M))


def missing_path(cited: str, base: Path = REPO) -> str | None:
    """``None`` when ``cited`` exists under ``base``, else what is missing."""
    cited = cited.rstrip(".,;:")
    cited, _, name = cited.partition("::")
    cited = re.split(r"<|\.\.\.|…", cited, maxsplit=1)[0]
    for path in expand_braces(cited):
        if "*" in path:
            if not list(base.glob(path)):
                return f"{path} (no match)"
        elif not (base / path).exists():
            return path
        elif name and not defines(base / path, name):
            return f"{path}::{name}"
    return None


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then look the rest up attribute by attribute."""
    parts = dotted.split(".")
    for size in range(len(parts), 0, -1):
        module_name = ".".join(parts[:size])
        try:
            found = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is None or not module_name.startswith(error.name):
                raise  # the module exists but one of its own imports fails
            continue
        for attribute in parts[size:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


def cited_names(text: str) -> set[str]:
    names = {name for name in DOTTED.findall(text) if name.rsplit(".", 1)[1] not in FILE_SUFFIXES}
    for module, imported in FROM_IMPORT.findall(text):
        for name in imported.strip("()").replace("\n", " ").split(","):
            name = name.split(" as ")[0].strip()
            if re.fullmatch(r"\w+", name):
                names.add(f"{module}.{name}")
    return names


def document_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("document", DOCUMENTS, ids=document_id)
def test_cited_paths_exist(document: Path) -> None:
    text = document.read_text()
    missing = {path: missing_path(path) for path in PATH.findall(text)}
    for target in LINK.findall(text):
        if not re.match(r"[a-z]+:|#", target):
            missing[target] = missing_path(target.split("#")[0], document.parent)
    assert not {cited: what for cited, what in missing.items() if what}


@pytest.mark.parametrize("document", DOCUMENTS, ids=document_id)
def test_cited_names_resolve(document: Path) -> None:
    unresolved = {}
    for name in sorted(cited_names(document.read_text())):
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            unresolved[name] = f"{type(error).__name__}: {error}"
    assert not unresolved


def test_the_checks_can_fail(tmp_path: Path) -> None:
    assert missing_path("data_builders/mining/records.py") is None
    assert missing_path("data_builders/mining/no_such_file.py") == "data_builders/mining/no_such_file.py"
    assert missing_path("examples/configs/*.nothing") == "examples/configs/*.nothing (no match)"
    assert missing_path("data_builders/storage.py::image_key") is None
    assert missing_path("data_builders/storage.py::no_such_name") == "data_builders/storage.py::no_such_name"
    assert missing_path("docs/{method,mining}.md.") is None and missing_path("docs/{method,nothing}.md")
    assert PATH.findall("see `docs/x.md`, VLM2Vec/examples/a.py and https://h/examples/b.py") == ["docs/x.md"]
    assert cited_names("`unime_v2.yaml`, unime_v2.trainers.") == {"unime_v2.trainers"}
    text = "```python\nfrom unime_v2.data_builders.storage import (\n    image_key,\n    nothing_here,\n)\n```"
    storage = "unime_v2.data_builders.storage"
    assert cited_names(text) == {storage, f"{storage}.image_key", f"{storage}.nothing_here"}
    for name in ("unime_v2.data_builders.storage.nothing_here", "unime_v2.data_builders.no_such_module"):
        with pytest.raises(AttributeError):
            resolve(name)
