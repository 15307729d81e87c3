"""The package's shape: no import cycle between fdk's modules, and files a reader can take in one sitting."""

import ast

from tests.conftest import REPO

PACKAGE = REPO / "fdk"


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path) -> set[str]:
    """Every fdk module a file imports, at top level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("fdk")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fdk"):
            found.add(node.module)
            # `from fdk import stats` imports the submodule fdk.stats
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_import_cycle():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how packages work; every other edge must be acyclic.
    state, stack = {}, []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for nxt in graph[name]:
            if name != nxt.rsplit(".", 1)[0] and nxt in graph and name.startswith(nxt + "."):
                raise AssertionError(f"{name} imports its own package {nxt}")
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name)


def test_files_stay_readable_in_one_sitting():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"split these into concepts: {long}"
