"""The package layout stays true: every module imports, imports follow the stage order of ``morph4d.STAGES``,
no import circles, no reaching into another package's private names, each stage documents what it owns."""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import morph4d
from morph4d import STAGES, stage_of

ROOT = Path(morph4d.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {"morph4d": ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], "morph4d."):
        path = ROOT.joinpath(*info.name.split(".")[1:])
        mods[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every morph4d import in the file, also inside functions."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "morph4d"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.split(".")[0] != "morph4d":
                continue
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{base}.{a.name}"
                out.append((sub, "", node.lineno) if sub in MODULES else (base, a.name, node.lineno))
    return out


def test_every_module_imports():
    assert len(MODULES) > 60
    for name in MODULES:
        importlib.import_module(name)


def test_every_module_belongs_to_a_stage_and_imports_only_earlier_ones():
    bad = []
    for name, path in MODULES.items():
        stage = stage_of(name)
        for target, _, line in _imports(name, path):
            other = stage_of(target)
            if other != stage and other not in STAGES[stage]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {stage} imports {target} ({other})")
    assert not bad, "imports against the stage order of morph4d.STAGES:\n" + "\n".join(bad)


def test_stage_order_is_acyclic():
    seen = []
    for stage, allowed in STAGES.items():   # listed in data-flow order: a stage only names stages listed before it
        assert set(allowed) <= set(seen), stage
        seen.append(stage)


def test_no_import_circles():
    graph = {name: {t for t, _, _ in _imports(name, path) if t in MODULES and t != name}
             for name, path in MODULES.items()}
    # a package __init__ that re-exports its submodules is their parent, not a circle with them
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and MODULES[t].name == "__init__.py")}
    state, stack, circles = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                circles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_no_private_names_from_other_packages():
    bad = []
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for target, imported, line in _imports(name, path):
            private = (imported or target.rsplit(".", 1)[1]).startswith("_")
            if private and not target.startswith(package) and not imported.startswith("__version__"):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {target} {imported}")
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


@pytest.mark.parametrize("stage", [s for s in STAGES if s not in ("foundation", "cli")])
def test_each_stage_says_what_it_owns_and_may_import(stage):
    doc = importlib.import_module(f"morph4d.{stage}").__doc__ or ""
    assert "Owns:" in doc, stage
    assert "May import:" in doc, stage


def test_shared_numbers_agree():
    """The one number a lower stage spells because it may not import the stage that defines it: the MMVDM's
    conditioning channels (models sit below conditioning)."""
    from morph4d.conditioning.maps import NUM_CONDITIONING_CHANNELS
    from morph4d.models.mmvdm import MMVDMConfig
    assert MMVDMConfig().conditioning_channels == NUM_CONDITIONING_CHANNELS
