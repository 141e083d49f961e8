"""#32 item 1: every shipped deployment leaves `status` able to see its watcher.

Each case reads one deployment file's configuration (the systemd units and the environment file
they read, the NSSM recipe and the `.env` it shows, the Kubernetes Deployment's args, env and
probes, compose's command and environment), runs `watch` and `status` the way that file does
against the test server, its paths moved into the test's folder, then kills the watcher with
SIGKILL (no clean stop, no "stopped" mark) and waits for `status` to say so: exit 3, naming the
watcher. A watcher that `status` cannot find (a token file named on the watcher's command line
only) leaves status "healthy" for ever: the alert MONITORING.md builds on exit 3 never fires.
"""

from __future__ import annotations

import re
import shlex
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import pytest
import yaml
from dotenv import dotenv_values

from order_archiver.cli.main import build_parser
from tests.conftest import run_cli
from tests.helpers import ROOT, WatchProcess, seed_database, wait_for

pytestmark = pytest.mark.e2e

DEPLOY = ROOT / "deploy"
# What the test changes in every deployment's settings: its own database, a heartbeat it need
# not wait long for. Nothing else: paths are only moved under the test's folder.
HEARTBEAT_S = "1"
MAX_AGE = "2s"  # for the check after the kill: past the 1 s heartbeat, short to wait for


@dataclass
class Deployment:
    """How one deployment file runs the watcher and `status` (arguments after main.py)."""

    watch_args: list[str]
    watch_env: dict[str, str]
    status_commands: list[list[str]]
    status_env: dict[str, str]
    cwd: Path
    dotenv: dict[str, str] = field(default_factory=dict)  # the app folder's .env, if the file uses one
    # The folders the deployment makes before the watcher starts (systemd's StateDirectory=, the
    # NSSM recipe's New-Item): a token file's folder that does not exist is refused (exit 2).
    folders: list[Path] = field(default_factory=list)


def main_args(command: list[str]) -> list[str]:
    index = next(i for i, part in enumerate(command) if part.endswith("main.py"))
    return command[index + 1 :]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redirect:
    """A deployment's absolute paths (/var/lib/..., /etc/..., C:\\ProgramData\\...) moved under
    the test's folder, the same file for every process that names it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, value: str) -> str:
        if re.match(r"^[A-Za-z]:[\\/]", value):
            windows = PureWindowsPath(value)
            return str(self.root.joinpath(windows.drive.rstrip(":"), *windows.parts[1:]))
        if value.startswith("/"):
            return str(self.root / value.lstrip("/"))
        return value

    def text(self, value: str) -> str:
        """Every path inside a value (``--flag=/path``, a Windows path in a line)."""
        return re.sub(
            r"(?<![\w:])([A-Za-z]:[\\/][^\s\"']+|/[\w./-]+)", lambda m: self.path(m.group(1)), value
        )


def local_metrics(args: list[str]) -> list[str]:
    """The metrics endpoint on a free loopback port (several tests run at once on one host)."""
    out = list(args)
    if "--metrics-port" in out:
        out[out.index("--metrics-port") + 1] = str(free_port())
    if "--metrics-address" in out:
        out[out.index("--metrics-address") + 1] = "127.0.0.1"
    return out


def with_flag(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


# --- the deployment files, read ---------------------------------------------------------------


def unit_service(name: str) -> dict[str, list[str]]:
    """A systemd unit's [Service] settings, each key's values in order."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def environment_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile=: KEY=VALUE lines, # comments, optional quotes."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip("\"'")
    return values


# The environment file the units name, as shipped: the operator installs this one there.
SHIPPED_ENV_FILES = {"/etc/order-archiver/env": DEPLOY / "systemd" / "env.example"}


def unit_environment(service: dict[str, list[str]], redirect: Redirect, uri: str) -> dict[str, str]:
    """Environment=, then EnvironmentFile= (systemd reads the files last: they override), the
    unit's credential written where %d points."""
    credentials = Path(redirect.path("/run/credentials")) / shlex.split(service["ExecStart"][0])[3]
    credentials.mkdir(parents=True, exist_ok=True)
    for credential in service.get("LoadCredential", []):
        name = credential.split(":", 1)[0]
        (credentials / name).write_text(uri)
    env = {}
    for assignment in service.get("Environment", []):
        key, value = assignment.split("=", 1)
        env[key] = redirect.text(value)
    for name in service.get("EnvironmentFile", []):
        env.update(
            {k: redirect.text(v) for k, v in environment_file(SHIPPED_ENV_FILES[name.lstrip("-")]).items()}
        )
    return {key: value.replace("%d", str(credentials)) for key, value in env.items()}


def systemd(redirect: Redirect, uri: str) -> Deployment:
    watch = unit_service("order-archiver-watch.service")
    health = unit_service("order-archiver-health.service")
    (watch_start,) = watch["ExecStart"]
    (status_start,) = health["ExecStart"]
    (workdir,) = watch["WorkingDirectory"]
    return Deployment(
        watch_args=[redirect.text(a) for a in main_args(shlex.split(watch_start))],
        watch_env=unit_environment(watch, redirect, uri),
        status_commands=[main_args(shlex.split(status_start))],
        status_env=unit_environment(health, redirect, uri),
        cwd=Path(redirect.path(workdir)),
        # systemd.exec: StateDirectory= names folders under /var/lib made before the unit starts.
        folders=[Path(redirect.path(f"/var/lib/{name}")) for name in watch.get("StateDirectory", [])],
    )


def nssm(redirect: Redirect, uri: str) -> Deployment:
    text = (DEPLOY / "windows" / "NSSM.md").read_text()
    install = re.search(r'^nssm install order-archiver "[^"]+" "([^"]+)"$', text, re.MULTILINE)
    folder = re.search(r"^nssm set order-archiver AppDirectory (\S+)$", text, re.MULTILINE)
    extra = re.findall(r'^nssm set order-archiver AppEnvironmentExtra "([^"]+)"$', text, re.MULTILINE)
    health = re.search(r"^\s+health: (.+)$", text, re.MULTILINE)
    assert install, "the NSSM recipe's install line"
    assert folder, "the NSSM recipe's AppDirectory"
    assert health, "the NSSM recipe's health task"
    block = re.search(r"```dotenv\n(.*?)```", text, re.DOTALL)
    dotenv = {}
    if block:  # the app folder's .env, as the page shows it
        for line in block.group(1).splitlines():
            key, value = line.split("=", 1)
            dotenv[key] = redirect.text(value)
    dotenv["MONGODB_URI"] = uri
    service_env = dict(assignment.split("=", 1) for assignment in extra)
    return Deployment(
        watch_args=[redirect.text(a) for a in shlex.split(install.group(1).replace("\\", "/"))[1:]],
        watch_env={key: redirect.text(value) for key, value in service_env.items()},
        status_commands=[main_args(shlex.split(health.group(1).replace("\\", "/")))],
        status_env={},
        cwd=Path(redirect.path(folder.group(1))),
        dotenv=dotenv,
        folders=[
            Path(redirect.path(made))
            for made in re.findall(r"^New-Item -ItemType Directory -Force (\S+)$", text, re.MULTILINE)
        ],
    )


def kubernetes(redirect: Redirect, uri: str) -> Deployment:
    manifest = next(
        d
        for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "watch-deployment.yaml").read_text())
        if d["kind"] == "Deployment"
    )
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: redirect.text(str(e["value"])) for e in container["env"]}
    secret = Path(env["MONGODB_URI_FILE"])  # the Secret, mounted as a file
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(uri)
    # Readiness is `status` (the deployment's health); liveness is this process's own /healthz
    # on its metrics port (tests/e2e/test_liveness_e2e.py): not a status command.
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    probes = [main_args(container["readinessProbe"]["exec"]["command"])]
    return Deployment(  # the probe runs in the watcher's container: the same environment
        watch_args=local_metrics(container["args"]),
        watch_env=env,
        status_commands=probes,
        status_env=env,
        cwd=Path(redirect.path("/app")),
    )


def compose(redirect: Redirect, uri: str) -> Deployment:
    text = (ROOT / "compose.yaml").read_text()
    services = yaml.safe_load(text)["services"]
    # The operator's status, as the file's header gives it: a one-off container of a service.
    found = re.search(r"docker compose run --rm (\w+) (status\S*(?: -\S+)*)", text)
    assert found, "compose.yaml says how to run status"
    service, status = found.group(1), found.group(2).split()

    def environment(name: str) -> dict[str, str]:  # MONGODB_URI: the test server, not `mongo`
        return {**{k: str(v) for k, v in services[name]["environment"].items()}, "MONGODB_URI": uri}

    return Deployment(
        watch_args=local_metrics(services["watch"]["command"]),
        watch_env=environment("watch"),
        status_commands=[status],
        status_env=environment(service),
        cwd=Path(redirect.path("/app")),
    )


DEPLOYMENTS: dict[str, Callable[[Redirect, str], Deployment]] = {
    "systemd": systemd,
    "nssm": nssm,
    "kubernetes": kubernetes,
    "compose": compose,
}


def watcher_name(deployment: Deployment) -> str:
    """The name `status` gives this watcher: its --name (mongo store) or its token file."""
    args = build_parser().parse_args(deployment.watch_args)
    if args.token_store == "mongo":
        return str(args.name)
    token_file = (
        args.token_file
        or deployment.watch_env.get("RESUME_TOKEN_FILE")
        or deployment.dotenv.get("RESUME_TOKEN_FILE")
        or ".resume_token.json"
    )
    return token_file


@pytest.mark.parametrize("kind", sorted(DEPLOYMENTS))
def test_status_sees_the_watcher_killed(kind, nx_server, nx_client, nx_settings, db_name, tmp_path):
    seed_database(nx_client[db_name], nx_settings, 30, seed=32, p_anomalies=0.0)
    deployment = DEPLOYMENTS[kind](Redirect(tmp_path / "host"), nx_server.uri)
    assert deployment.watch_args[0] == "watch"
    test_settings = {"MONGODB_DATABASE": db_name, "WATCH_HEARTBEAT_S": HEARTBEAT_S}
    deployment.cwd.mkdir(parents=True, exist_ok=True)
    for folder in deployment.folders:
        folder.mkdir(parents=True, exist_ok=True)
    if deployment.dotenv:
        dotenv_file = deployment.cwd / ".env"
        dotenv_file.write_text(
            "".join(f"{k}={v}\n" for k, v in {**deployment.dotenv, **test_settings}.items())
        )
        dotenv_file.chmod(0o600)
        assert dotenv_values(dotenv_file)["MONGODB_DATABASE"] == db_name
        test_settings = {}  # in the .env, as the deployment keeps its settings
    name = watcher_name(deployment)

    watcher = WatchProcess(
        {**deployment.watch_env, **test_settings}, deployment.cwd, *deployment.watch_args[1:]
    )
    status_env = {**deployment.status_env, **test_settings}

    def status(args: list[str]):
        return run_cli(*args, env=status_env, cwd=deployment.cwd, timeout=60)

    try:
        checkpoints = nx_client[db_name]["archiver_checkpoints"]
        wait_for(
            lambda: (
                checkpoints.find_one({"_id": f"watch:{name}"}) is not None
                if build_parser().parse_args(deployment.watch_args).token_store == "mongo"
                else Path(name).is_file()
            ),
            what=f"{kind}: the watcher's first saved token",
            on_timeout=watcher.output,
        )
        for command in deployment.status_commands:  # as the file runs it, the watcher alive
            result = status(command)
            assert result.returncode == 0, f"{kind} {command}: {result.stdout}{result.stderr}"
            if "-q" in command:  # a health check: silent while healthy (#32, a new user's try)
                assert result.stdout == "", result.stdout
                result = status([word for word in command if word != "-q"])
            assert f"watcher {name} (" in result.stdout, (
                f"{kind}: status does not see the watcher\n{result.stdout}"
            )
    finally:
        assert watcher.stop(signal.SIGKILL) == -signal.SIGKILL

    stale: list[str] = []

    def reported_dead() -> bool:
        result = status(with_flag(deployment.status_commands[0], "--max-heartbeat-age", MAX_AGE))
        stale[:] = [str(result.returncode), result.stdout + result.stderr]
        return result.returncode == 3

    wait_for(reported_dead, timeout=30, what=f"{kind}: status exit 3", on_timeout=lambda: " ".join(stale))
    assert f"watcher {name}: token saved" in stale[1]
    assert "is it running?" in stale[1]
