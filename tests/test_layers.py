"""The package's modules form layers: imports flow one way, and none hides in a function.

Read from the source (no module is imported): every `import purejaxbrc...` and `from purejaxbrc...`
of every module, wherever it stands."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "purejaxbrc"
# Imported inside functions on purpose: slow to import and needed by one kind of run or one
# optional feature only (MuJoCo for MJX and its videos, gymnax for games, the trackers' extras).
LAZY_ALLOWED = {"mujoco_playground", "mujoco", "gymnax", "wandb", "tensorboard"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """`(imported purejaxbrc module, at top level?)` for each import of `path`, and the other
    packages it imports inside functions."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    ours, lazy = [], []
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        at_top = id(node) in top
        for name in names:
            if name.startswith("purejaxbrc"):
                ours.append((name, at_top))
            elif not at_top:
                lazy.append(name.split(".")[0])
    return ours, lazy


def graph():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        ours, _ = imports(path)
        # `from purejaxbrc.x import y` names module x (y may be a module too: then both count).
        edges[name] = {m for m, _ in ours if m in modules and m != name and m != "purejaxbrc"}
    return modules, edges


def test_no_import_cycles():
    _, edges = graph()
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"
    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_no_imports_inside_functions_but_the_slow_optional_packages():
    for path in sorted(PACKAGE.rglob("*.py")):
        ours, lazy = imports(path)
        hidden = [m for m, at_top in ours if not at_top]
        assert not hidden, f"{path.name} imports {hidden} inside a function"
        assert set(lazy) <= LAZY_ALLOWED, f"{path.name} imports {sorted(set(lazy) - LAZY_ALLOWED)} inside a function"


def test_the_layers_are_those_the_readme_draws():
    """Core modules never reach up into the population, kinds, run-directory, program or harness
    layers; the program layer never reaches the harness."""
    _, edges = graph()
    layers = [
        {"purejaxbrc.backend", "purejaxbrc.config", "purejaxbrc.agent", "purejaxbrc.sac", "purejaxbrc.dqn", "purejaxbrc.train",
         "purejaxbrc.buffer", "purejaxbrc.normalizer", "purejaxbrc.categorical", "purejaxbrc.bronet", "purejaxbrc.orthogonal",
         "purejaxbrc.critic", "purejaxbrc.actor", "purejaxbrc.embedding", "purejaxbrc.padding",
         "purejaxbrc.envs", "purejaxbrc.envs.base", "purejaxbrc.envs.mjx", "purejaxbrc.envs.gymnax",
         "purejaxbrc.lapack", "purejaxbrc.aggregate", "purejaxbrc.video"},
        {"purejaxbrc.sweep", "purejaxbrc.distributed"},
        {"purejaxbrc.kinds", "purejaxbrc.kinds.base", "purejaxbrc.kinds.mjx", "purejaxbrc.kinds.minatar"},
        {"purejaxbrc.checkpoint", "purejaxbrc.rundir"},
        {"purejaxbrc.program"},
        {"purejaxbrc.transfer", "purejaxbrc.run", "purejaxbrc.cli", "purejaxbrc.tracking", "purejaxbrc.evaluate",
         "purejaxbrc.plot", "purejaxbrc.render"},
    ]
    level = {m: i for i, layer in enumerate(layers) for m in layer}
    assert set(edges) - {"purejaxbrc"} <= set(level), sorted(set(edges) - set(level) - {"purejaxbrc"})
    for module, targets in edges.items():
        for target in targets:
            if module in level and target in level:
                assert level[target] <= level[module], f"{module} (layer {level[module]}) imports {target} (layer {level[target]})"
