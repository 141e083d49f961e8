"""compose.yaml and the GitHub workflow cannot run here (no Docker, no GitHub): their shape
is checked, and every archiver command they run is parsed by the real parser."""

import re
from pathlib import Path

import yaml

from order_archiver.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def parses(args: list[str]) -> None:
    build_parser().parse_args(args)


def test_compose_runs_a_replica_set_and_the_watcher_on_it():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    mongo = services["mongo"]
    assert mongo["image"].startswith("mongo:")
    assert mongo["command"][:2] == ["--replSet", "rs0"]
    assert any(volume.endswith(":/data/db") for volume in mongo["volumes"])
    check = " ".join(mongo["healthcheck"]["test"])
    assert "rs.initiate(" in check
    assert "host: 'mongo:27017'" in check  # the name the other services reach it by
    assert "quit(" in check  # the health check's exit code says whether it is primary
    assert {"interval", "retries", "start_period"} <= set(mongo["healthcheck"])
    assert "mongo-data" in compose["volumes"]
    for name in ("watch", "simulate", "batch"):
        service = services[name]
        build = service["build"]  # simulate: a target of its own (test_supply_chain.py)
        assert (build if isinstance(build, str) else build["context"]) == "."
        assert service["depends_on"]["mongo"]["condition"] == "service_healthy"
        env = service["environment"]
        assert env["MONGODB_URI"] == "mongodb://mongo:27017/?replicaSet=rs0"
        parses(service["command"])
    assert services["watch"]["command"][0] == "watch"
    # #31 item 10: published on this host's loopback only, never on every interface.
    assert services["watch"]["ports"] == ["127.0.0.1:9108:9108"]
    assert all(str(p).startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    assert services["simulate"]["profiles"] == services["batch"]["profiles"] == ["tools"]


def test_the_ci_workflow_tests_on_the_test_server_real_mongodb_and_the_image():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert workflow["permissions"] == {"contents": "read"}  # least privilege for the token
    jobs = workflow["jobs"]
    assert {"test", "real-mongodb", "docker-image"} <= set(jobs)
    steps = lambda job: jobs[job]["steps"]  # noqa: E731
    assert any(s.get("run") == "make test" for s in steps("test"))
    assert any(s.get("run") == "make test-floor" for s in steps("test"))  # the version floor
    assert "\ntest-floor:" in (ROOT / "Makefile").read_text()
    matrix = jobs["real-mongodb"]["strategy"]["matrix"]["mongodb"]
    assert matrix == ["4.4", "5.0", "6.0", "7.0", "8.0"]
    server = next(s for s in steps("real-mongodb") if "docker run" in s.get("run", ""))["run"]
    assert "mongo:${{ matrix.mongodb }} --replSet rs0" in server
    assert 'rs.initiate({_id: "rs0"' in server
    real = next(s for s in steps("real-mongodb") if s.get("run") == "make test")
    assert real["env"]["TEST_MONGODB_URI"].endswith("?replicaSet=rs0")
    runs = [s["run"] for s in steps("docker-image") if "run" in s]
    assert any(r.startswith("docker build") for r in runs)
    smoke = [
        re.split(r" \|\|| 2>&1", re.split(r"order-archiver:ci\S* ", r, maxsplit=1)[1])[0].split()
        for r in runs
        if "docker run" in r
    ]
    assert ["--help"] in smoke
    for args in smoke:
        if args[0] != "--help":
            parses(args)
    python = [s for s in steps("test") if "setup-python" in s.get("uses", "")]
    assert python[0]["with"]["python-version"] == "3.11"
