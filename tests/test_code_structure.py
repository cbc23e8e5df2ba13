"""The packages' layering and one home per concept (docs/architecture.md): ``data_builders`` holds data and imports
nothing from ``trainers``; installed code never runs the ``examples/`` scripts, which are not installed; a public
class name means one thing; each shared loader and key is defined once."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
INSTALLED = ("data_builders", "trainers", "modeling_unime_v2", "hub_cards")
IMPORT_EVERY_DATA_BUILDER = """
import importlib, json, pkgutil, sys
import unime_v2.data_builders as root
names = [info.name for info in pkgutil.walk_packages(root.__path__, root.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "trainers": sorted(m for m in sys.modules if m.startswith("unime_v2.trainers"))}))
"""


def python_files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports anywhere (also inside functions), relative imports resolved from ``package``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.update({module, *(f"{module}.{alias.name}" for alias in node.names)})
    return found


def package_of(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(("unime_v2", *parts)) if path.name == "__init__.py" else ".".join(("unime_v2", *parts[:-1]))


@pytest.mark.parametrize("path", python_files("data_builders"), ids=lambda p: str(p.relative_to(REPO)))
def test_no_data_builders_module_imports_trainers(path: Path) -> None:
    modules = imported_modules(path, package_of(path))
    assert not {m for m in modules if m == "unime_v2.trainers" or m.startswith("unime_v2.trainers.")}


def test_importing_every_data_builders_module_loads_no_trainers_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_DATA_BUILDER], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "unime_v2.data_builders.mining.pipeline" in result["imported"]
    assert result["trainers"] == []


@pytest.mark.parametrize("folder", INSTALLED)
def test_installed_code_runs_no_script_by_path(folder: str) -> None:
    """Installed modules neither start processes nor run files (``subprocess``, ``runpy``): a script of
    ``examples/`` is not installed, and the orchestration of scripts lives next to them (``examples/quickstart.py``)."""
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in imported_modules(path, package_of(path)) if m in ("subprocess", "runpy")
        )
        for path in python_files(folder)
    }
    assert not {k: v for k, v in offenders.items() if v}


ONE_HOME = {
    "load_embedder": "data_builders/checkpoints.py",
    "merge_adapter": "data_builders/checkpoints.py",
    "image_key": "data_builders/storage.py",
    "item_key": "data_builders/storage.py",
    "oracle_mini_mmeb": "data_builders/formats/training_records.py",
    "RetrievalResult": "data_builders/mining/retrieval.py",
    "claim_output_dir": "trainers/run_folder.py",
    "check_output_dir": "trainers/run_folder.py",
}
"""Names defined in exactly one module of the repository (a thin ``item_key(item)`` wrapper over the storage one
excepted, see below)."""
WRAPPERS = {("item_key", "trainers/evaluation/encoding.py")}


def definitions(path: Path) -> set[str]:
    """The names of the functions and classes ``path`` defines at module level."""
    tree = ast.parse(path.read_text(), str(path))
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def calls(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text(), str(path))
    return any(
        isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
        for node in ast.walk(tree)
    )


def all_python_files() -> list[Path]:
    return [p for folder in (*INSTALLED, "examples", "benchmarks") for p in python_files(folder)]


def test_no_two_public_classes_share_a_name() -> None:
    homes: dict[str, list[str]] = {}
    for path in [p for folder in INSTALLED for p in python_files(folder)]:
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                homes.setdefault(node.name, []).append(str(path.relative_to(REPO)))
    assert not {name: files for name, files in homes.items() if len(files) > 1}


@pytest.mark.parametrize("name", ONE_HOME)
def test_one_home_each(name: str) -> None:
    found = {str(p.relative_to(REPO)) for p in all_python_files() if name in definitions(p)}
    assert found - {where for wrapped, where in WRAPPERS if wrapped == name} == {ONE_HOME[name]}


def test_oracle_records_are_built_in_one_place() -> None:
    """``oracle:mini_mmeb`` data: every loader goes through ``oracle_mini_mmeb``, none assembles its own."""
    callers = {str(p.relative_to(REPO)) for p in all_python_files() if calls(p, "oracle_mined_dataset")}
    assert callers <= {ONE_HOME["oracle_mini_mmeb"]}


def test_setup_installs_every_package() -> None:
    """``setup.py`` lists its packages by hand: a subpackage missing there is missing from every wheel."""
    tree = ast.parse((REPO / "setup.py").read_text())
    listed = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("FOLDERS", "SUBPACKAGES")
    }
    on_disk = {
        ".".join(path.parent.relative_to(REPO).parts)
        for folder in INSTALLED
        for path in (REPO / folder).rglob("__init__.py")
    }
    assert set(listed["FOLDERS"]) | set(listed["SUBPACKAGES"]) == on_disk
