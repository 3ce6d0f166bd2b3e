"""The package's architecture as tests: the folders tell where code lives, and the rules that
keep it so (no stage imports another; Ray only at the edge; short functions) fail loudly here
instead of drifting in review."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "hybrid"
SUBPACKAGES = {"config", "data", "store", "encoder", "decoder", "evaluation", "execution",
               "stages"}


def _imports(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, at any depth (imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.rglob("*.py"))


def test_the_package_is_the_documented_sub_packages() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == SUBPACKAGES
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "cli", "errors", "logs", "progress", "storage"}


@pytest.mark.parametrize("path", _modules(PACKAGE / "stages"), ids=lambda p: p.name)
def test_no_stage_imports_another_stage(path: pathlib.Path) -> None:
    if path.name == "__init__.py":
        return  # the registry names every stage, lazily
    stages = {f"hybrid.stages.{p.stem}" for p in _modules(PACKAGE / "stages")}
    others = sorted(m for m in _imports(path) & stages if m != f"hybrid.stages.{path.stem}")
    assert not others, f"{path.name} imports {others}: move what they share below the stages"


def test_nothing_below_the_stages_imports_them() -> None:
    offenders = [(str(p.relative_to(PACKAGE)), m) for p in _modules(PACKAGE)
                 if "stages" not in p.parts and p.name != "cli.py"
                 for m in _imports(p) if m.startswith("hybrid.stages")]
    assert offenders == []


def test_ray_is_imported_only_at_the_edge() -> None:
    users = sorted(str(p.relative_to(PACKAGE)) for p in _modules(PACKAGE)
                   if any(m == "ray" or m.startswith("ray.") for m in _imports(p)))
    assert users == ["execution/ray_executor.py"]


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = []
    for path in _modules(PACKAGE):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({length} lines)")
    assert long == []


def test_every_stage_module_is_registered_and_runs_the_same_way() -> None:
    from hybrid.stages import STAGES

    modules = {p.stem for p in _modules(PACKAGE / "stages")} - {"__init__", "template"}
    assert set(STAGES) == modules
    for stage in STAGES.values():
        assert callable(stage.run)


def test_the_readme_layout_names_every_module() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    missing = [str(p.relative_to(PACKAGE)) for p in _modules(PACKAGE)
               if p.name != "__init__.py" and p.name not in layout]
    assert missing == []


def test_old_public_import_paths_still_work() -> None:
    from hybrid.config import Config, load_config  # noqa: F401
    from hybrid.errors import ConfigError, StoreError  # noqa: F401
    from hybrid.storage import Store, open_store, table_bytes  # noqa: F401
    from hybrid.store.storage import Store as Moved

    assert Store is Moved
