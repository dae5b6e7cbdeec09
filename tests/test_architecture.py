"""The package's shape: no import cycle (imports inside functions count), layers import only downward
(core ← stages ← features ← tools ← tasks.py), every subpackage is a layer, `core/dist.py` imports nothing
of the package, every path of a run folder is spelled only in core/layout.py, and docs/design.md names
every layout path and stage that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "bhasha_build"
# A layer imports only the layers before it; tasks.py (outside the package) sits above them all.
LAYERS = {"core": 0, "stages": 1, "features": 2, "tools": 3}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Package modules `path` imports anywhere (top level or inside functions), resolved to modules."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name and target != "bhasha_build":
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    assert _find_cycle(_graph()) is None, " -> ".join(_find_cycle(_graph()) or [])


def test_cycle_finder_finds_a_planted_cycle() -> None:  # the check above can fail
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imported in sorted(graph.items()):
        layer = module.split(".")[1] if module.count(".") else None
        for target in sorted(imported):
            target_layer = target.split(".")[1] if target.count(".") else None
            if layer in LAYERS and target_layer in LAYERS and LAYERS[target_layer] > LAYERS[layer]:
                wrong.append(f"{module} imports {target}")
    return wrong


def test_layers_import_only_downward() -> None:
    assert not _upward_imports(_graph()), _upward_imports(_graph())


def test_upward_import_finder_finds_planted_ones() -> None:  # the check above can fail
    graph = {"bhasha_build.features.noise": {"bhasha_build.tools.bench", "bhasha_build.stages.data"},
             "bhasha_build.stages.data": {"bhasha_build.features.noise", "bhasha_build.core.text"},
             "bhasha_build.tools.bench": {"bhasha_build.features.noise", "bhasha_build.core.text"}}
    assert _upward_imports(graph) == ["bhasha_build.features.noise imports bhasha_build.tools.bench",
                                      "bhasha_build.stages.data imports bhasha_build.features.noise"]


def test_every_subpackage_is_a_layer() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(LAYERS), f"subpackages {sorted(packages)} vs LAYERS {sorted(LAYERS)}"


def test_nothing_in_the_package_imports_tasks() -> None:  # tasks.py is the top layer
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno}" for n in names if n.split(".")[0] == "tasks"]
    assert not offenders, offenders


def test_dist_imports_nothing_of_the_package() -> None:
    assert _graph()["bhasha_build.core.dist"] == set()


# Run-folder names that only core/layout.py may spell (as a quoted string or a path join).
RUN_FOLDER_NAMES = ["manifest.json", "train.jsonl", "eval.jsonl", "rejects.jsonl", "stats.json", "base-model",
                    "checkpoints", "adapter", "base_model.json", "train_log.jsonl", "loss.png", "merged",
                    "model-f16.gguf", "model-q4_k_m.gguf", "eval.json", "eval_predictions.jsonl",
                    "cer_by_lang.png", "Modelfile", "sanity.json", "deploy.json", "promote.json", "rollback.json",
                    "report.md"]


def _spelled_paths(path: Path) -> list[str]:
    """Run-folder names a module spells: file names as string values, folder names in `x / "name"` joins."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            value = node.right.value
            if isinstance(value, str) and value.split("/")[0] in RUN_FOLDER_NAMES:
                found.append(f"{where}:{node.lineno}: / {value!r}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value
              and any(re.fullmatch(rf"(.*/)?{re.escape(n)}", node.value) for n in RUN_FOLDER_NAMES if "." in n)):
            found.append(f"{where}:{node.lineno}: {node.value!r}")
    return found


def test_run_folder_paths_are_spelled_only_in_the_layout() -> None:
    offenders = [hit for p in PACKAGE.rglob("*.py") if p.name != "layout.py" for hit in _spelled_paths(p)]
    assert not offenders, offenders


def test_spelled_path_finder_finds_planted_paths(tmp_path: Path) -> None:
    # Planted in tmp, not in the package: the image's /app is read-only.
    planted = tmp_path / "_planted_for_test.py"
    planted.write_text('from pathlib import Path\nA = Path("r") / "adapter"\nB = "runs/x/eval.json"\n')
    assert _spelled_paths(planted) == [f"{planted}:2: / 'adapter'", f"{planted}:3: 'runs/x/eval.json'"]


def test_design_doc_names_every_layout_path_and_stage() -> None:
    from bhasha_build.core.layout import RunLayout
    from bhasha_build.stages.pipeline import STAGES

    doc = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    layout = RunLayout(Path("runs") / "demo")
    for name, path in layout.documented_paths().items():
        rel = path.relative_to(layout.root).as_posix()
        assert f"`{name}`" in doc and rel in doc, f"docs/design.md does not describe layout.{name} ({rel})"
    assert layout.gguf("Q4_K_M").name in doc
    for stage in STAGES:
        assert f"`{stage}`" in doc, f"docs/design.md does not describe the {stage} stage"
    # ...and its tables name nothing that is not there
    folder_section = doc.split("## Run folder", 1)[1].split("\n## ", 1)[0]
    for name in re.findall(r"^\| `(\w+)` \|", folder_section, flags=re.M):
        assert hasattr(RunLayout, name), f"docs/design.md names layout.{name}, which does not exist"
    for name in re.findall(r"^\| `(\w+)` \| `stages/", doc, flags=re.M):
        assert name in STAGES, f"docs/design.md names stage {name}, which does not exist"


@pytest.mark.parametrize("bad", ["/", "..", ".", "../x", "a/b", "", ".hidden", "-x", "x" * 101])
def test_run_names_are_simple_slugs(bad: str) -> None:
    from bhasha_build.core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="not a simple name"):
        load_config(env={}, overrides=[f"run={bad!r}".replace("'", '"')])
