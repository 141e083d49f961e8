"""With ``TEST_MONGODB_URI`` the suite runs on any MongoDB: every test that needs the bundled
test server itself (a server of its own, a proxy in front of it, its account or fault knobs)
must say so with ``test_server_only``, or it would fail there for the wrong reason."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
NEEDS_THE_TEST_SERVER = (
    "NxServer(",
    "FaultProxy(",
    "PLAIN_USER",
    "NX_FAULT_",
    "NX_RESUME_RETENTION_ROWS",
    "NX_MONGODB_VERSION",
    "NX_REPLICA_SET",
)


def marked(node: ast.AST) -> bool:
    return any("test_server_only" in ast.unparse(d) for d in getattr(node, "decorator_list", []))


def test_every_test_that_needs_the_test_server_is_marked():
    unmarked = []
    for path in sorted((TESTS / "integration").glob("test_*.py")) + sorted((TESTS / "e2e").glob("test_*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        module_marked = "test_server_only" in "".join(
            ast.unparse(n) for n in tree.body if isinstance(n, ast.Assign) and "pytestmark" in ast.unparse(n)
        )
        fixtures = {
            n.name: ast.get_source_segment(source, n)
            for n in tree.body
            if isinstance(n, ast.FunctionDef) and not n.name.startswith("test_")
        }
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            text = ast.get_source_segment(source, node) or ""
            used = [fixtures[a.arg] or "" for a in node.args.args if a.arg in fixtures]
            needs = any(k in part for part in [text, *used] for k in NEEDS_THE_TEST_SERVER)
            if needs and not (module_marked or marked(node)):
                unmarked.append(f"{path.name}::{node.name}")
    assert unmarked == []


def test_the_marker_is_registered():
    import tomllib

    config = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())
    markers = config["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("test_server_only(reason)") for m in markers)
