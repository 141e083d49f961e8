"""How the product modules depend on each other: one way, never on the tests."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = {path.stem for path in ROOT.glob("*.py")}


def imports_of(module: str) -> set[str]:
    """The modules ``module`` imports, at the top or inside a function."""
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_no_product_module_imports_the_tests():
    assert {m for m in PRODUCT if "tests" in imports_of(m)} == set()


def test_the_product_modules_import_each_other_one_way():
    graph = {m: imports_of(m) & PRODUCT - {m} for m in PRODUCT}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_the_bottom_layer_imports_no_domain_module():
    """Settings, errors and the pure helpers sit below everything that reads or writes."""
    assert imports_of("errors") & PRODUCT == set()
    assert imports_of("pii") & PRODUCT == set()
    assert imports_of("config") & PRODUCT <= {"errors", "pii"}
    assert imports_of("enrichment") & PRODUCT <= {"errors", "pii"}
    assert imports_of("selection") & PRODUCT <= {"errors", "enrichment"}


def test_main_only_parses_and_dispatches():
    assert not {"pymongo", "bson", "mongomock"} & imports_of("main")
