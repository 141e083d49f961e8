"""With ``TEST_MONGODB_URI`` the suite runs on any MongoDB: every test that needs the bundled
test server itself (a server of its own, a proxy in front of it, its account or fault knobs)
must say so with ``test_server_only``, or it would fail there for the wrong reason."""

import ast
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
STANDS_OWN = TESTS.parent / "teststand" / "tests"  # the test server's own tests
NEEDS_THE_TEST_SERVER = (
    "NxServer(",
    "standalone_server",
    "FaultProxy(",
    "PLAIN_USER",
    "NX_FAULT_",
    "NX_RESUME_RETENTION_ROWS",
    "NX_MONGODB_VERSION",
    "NX_REPLICA_SET",
    "NX_SECONDARY_LAG_FILE",
    "NX_SCAN_TIME_LIMIT_OVER",
    "NX_SORT_MEMORY_OVER",
    "NX_DEFAULT_MAX_TIME_DOCS",
    "running_server(",
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


def module_marked(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets)
        and "test_server_only" in ast.unparse(node.value)
        for node in tree.body
    )


def test_every_module_of_the_test_servers_own_tests_is_marked_whole():
    """Its tests assert the stand-in's behaviour, knobs and faults, some of it its own departure
    from MongoDB: none is a test of another server."""
    modules = sorted(STANDS_OWN.glob("test_*.py"))
    assert modules
    assert [path.name for path in modules if not module_marked(path)] == []


# Collects the suite as ``make test`` does (pyproject's testpaths) and prints each test, with
# whether it would run or is skipped (a skip marker: the conftest's hook adds them).
_WOULD_RUN = """
import sys, pytest

class WouldRun:
    def pytest_collection_finish(self, session):
        for item in session.items:
            skipped = any(mark.name == "skip" for mark in item.iter_markers())
            print("SKIPS" if skipped else "RUNS", item.nodeid)

sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"], plugins=[WouldRun()]))
"""


def test_against_another_server_no_test_of_the_test_servers_own_is_selected():
    """``TEST_MONGODB_URI`` (any URI: nothing connects while collecting) runs the product's tests
    and none of the stand-in's: one of those asserted that an update of ``items.0.quantite`` is
    refused (code 2), which MongoDB applies."""
    env = {
        k: v for k, v in os.environ.items() if k != "ARCHIVER_COMMAND_SHAPES"
    }  # not this session's records
    env["TEST_MONGODB_URI"] = "mongodb://192.0.2.1:27017/?replicaSet=rs0"
    result = subprocess.run(
        [sys.executable, "-c", _WOULD_RUN],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    listed = [
        line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("RUNS ", "SKIPS "))
    ]
    runs = [nodeid for verdict, nodeid in listed if verdict == "RUNS"]
    assert [nodeid for nodeid in runs if nodeid.startswith("teststand/")] == []
    assert [
        nodeid
        for nodeid in runs
        if nodeid.endswith("::test_an_update_path_into_an_array_is_refused_not_ignored")
    ] == []
    # The stand-in's own tests are in the suite (pyproject's testpaths), skipped there, this one too.
    departure = (
        "teststand/tests/test_nx_launcher.py::test_an_update_path_into_an_array_is_refused_not_ignored"
    )
    assert ["SKIPS", departure] in listed
    assert {nodeid.split("/")[0] for _, nodeid in listed} == {"tests", "teststand"}
    # The product's tests still run there, on that server: unit, integration and end to end.
    assert {nodeid.split("/")[1] for nodeid in runs} == {"unit", "integration", "e2e"}
