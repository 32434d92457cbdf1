"""The architecture, read from the imports: every module of backend/, ui/ and storage/ sits in one layer, and its
imports (lazy ones inside functions too) only run down: ui → jobs → engine → data → scoring, storage beneath them
all."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS = ("ui", "jobs", "engine", "data", "scoring", "storage")
"""Top to bottom: a layer may import itself and the layers below it, except as MAY_IMPORT narrows it."""
MAY_IMPORT = {layer: set(LAYERS[i:]) for i, layer in enumerate(LAYERS)}
MAY_IMPORT["scoring"] = {"scoring"}  # pure Python: not even storage
ORDER = "ui → jobs → engine → data → scoring, storage beneath them all"
HEAVY = ("torch", "torchvision", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "vllm", "liger_kernel")
"""The training stack: never imported by scoring; elsewhere only inside the functions that need it, so that the page
and the worker (which import engine.settings, engine.gpus, engine.families) start without it."""


def layer_of(module: str) -> str | None:
    """'backend.engine.models' -> 'engine', 'ui.cli' -> 'ui', 'storage.db' -> 'storage'; None for a project module
    in no layer (backend itself, or a module directly under backend/)."""
    parts = module.split(".")
    if parts[0] in ("ui", "storage"):
        return parts[0]
    if parts[0] == "backend" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None


def is_project(module: str) -> bool:
    return module.split(".")[0] in ("backend", "ui", "storage")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files(root: Path) -> list[Path]:
    return [p for top in ("backend", "ui", "storage") for p in sorted((root / top).rglob("*.py"))
            if "__pycache__" not in p.parts]


def imports(root: Path, path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, whether it runs when the module is imported) for every import in the file, lazy ones
    inside functions included, relative ones resolved; `from P import n` counts as P.n when that is a module."""
    def is_module(dotted: str) -> bool:
        base = root.joinpath(*dotted.split("."))
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()

    tree = ast.parse(path.read_text(), str(path))
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    at_import = set()  # statements that run when the module is imported: its body, into if/try/with, not into defs
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        at_import.add(id(node))
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, id(node) in at_import) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full if is_module(full) else base, id(node) in at_import))
    return sorted(found)


def stray_modules(root: Path) -> list[str]:
    return [f"{p.relative_to(root)} is in no layer: move it into backend/scoring, data, engine or jobs (each "
            "package's __init__ says what lives there)"
            for p in project_files(root)
            if layer_of(module_name(root, p)) is None and p != root / "backend" / "__init__.py"]


def wrong_imports(root: Path) -> list[str]:
    """Every import that runs against the layers, or brings the training stack where it must not be."""
    wrong = []
    for path in project_files(root):
        here, where = layer_of(module_name(root, path)), path.relative_to(root)
        for line, module, at_import in imports(root, path):
            if module.split(".")[0] in HEAVY:
                if here == "scoring":
                    wrong.append(f"{where}:{line} imports {module}: scoring is pure Python, no {module.split('.')[0]}")
                elif at_import:
                    wrong.append(f"{where}:{line} imports {module} at module level: import it inside the function "
                                 "that needs it (the page and the worker must not load the training stack)")
                continue
            if not is_project(module):
                continue
            there = layer_of(module)
            if here is None:
                wrong.append(f"{where}:{line} imports {module}: {where} imports nothing of the project")
            elif there is None:
                wrong.append(f"{where}:{line} imports {module}, which is in no layer")
            elif there not in MAY_IMPORT[here]:
                wrong.append(f"{where}:{line} imports {module}: {here} may import only "
                             f"{', '.join(layer for layer in LAYERS if layer in MAY_IMPORT[here])} ({ORDER})")
    return wrong


def test_every_module_sits_in_a_layer():
    assert stray_modules(ROOT) == []


def test_imports_run_one_way_and_the_training_stack_stays_in_functions():
    wrong = wrong_imports(ROOT)
    assert not wrong, "imports against the architecture:\n" + "\n".join(wrong)


def test_the_checks_name_the_file_and_the_import(tmp_path):
    def write(relative: str, text: str = "") -> None:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)

    for package in ("backend", "backend/engine", "backend/jobs", "backend/scoring", "ui", "storage"):
        write(f"{package}/__init__.py")
    write("backend/jobs/runs.py")
    write("backend/engine/loader.py", "import json\n\n\ndef load():\n    from backend.jobs import runs\n")
    write("backend/scoring/maths.py", "def f():\n    import torch\n")
    write("ui/tab.py", "import torch.nn\nfrom backend.engine import loader\n")
    write("backend/stray.py", "from . import engine\n")
    assert stray_modules(tmp_path) == ["backend/stray.py is in no layer: move it into backend/scoring, data, engine "
                                       "or jobs (each package's __init__ says what lives there)"]
    assert wrong_imports(tmp_path) == [
        f"backend/engine/loader.py:5 imports backend.jobs.runs: engine may import only engine, data, scoring, "
        f"storage ({ORDER})",
        "backend/scoring/maths.py:2 imports torch: scoring is pure Python, no torch",
        "backend/stray.py:1 imports backend.engine: backend/stray.py imports nothing of the project",
        "ui/tab.py:1 imports torch.nn at module level: import it inside the function that needs it (the page and the "
        "worker must not load the training stack)",
    ]
