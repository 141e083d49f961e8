"""What a reviewer checks in the deployment files, checked by a test."""

import re
import shlex
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from order_archiver.cli.main import build_parser
from tests.helpers import product_files
from tests.privileges import NoRule, Privilege, documented_roles, required, shipped_roles

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def parses(argv: list[str]) -> None:
    """The command line is one main.py accepts (argparse exits on an unknown flag)."""
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def main_args(command: list[str]) -> list[str]:
    index = next(i for i, part in enumerate(command) if part.endswith("main.py"))
    return command[index + 1 :]


def docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker matches it (Go's ``filepath.Match`` on the path from the
    context's root, plus ``**``): ``*`` and ``?`` never cross a ``/``, ``**`` crosses any number
    of folders. Not ``fnmatch``, whose ``*`` crosses them: with it ``*.pyc`` seemed to leave out
    every compiled file, where Docker leaves out only those at the root."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
    wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(part, re.escape(part)) for part in parts) + "$")


def docker_ignored(relative: str) -> bool:
    """Whether .dockerignore leaves ``relative`` out of the build context: the last pattern that
    matches it or a folder above it decides (``!`` takes it back in)."""
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    parts = relative.split("/")
    paths = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for rule in rules:
        if not rule or rule.startswith("#"):
            continue
        keep = rule.startswith("!")
        pattern = docker_pattern(rule.lstrip("!"))
        if any(pattern.match(path) for path in paths):
            ignored = not keep
    return ignored


def image_files() -> set[str]:
    """The files the Dockerfile's COPY lines take from the build context (the checkout less
    what .dockerignore leaves out)."""
    text = (ROOT / "Dockerfile").read_text()
    copied: set[str] = set()
    for source in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", text, re.MULTILINE):
        for pattern in source.split():
            matched = [ROOT / pattern] if (ROOT / pattern).is_dir() else list(ROOT.glob(pattern))
            for path in matched:
                files = path.rglob("*") if path.is_dir() else [path]
                copied |= {
                    str(f.relative_to(ROOT))
                    for f in files
                    if f.is_file() and not docker_ignored(str(f.relative_to(ROOT)))
                }
    return copied


def test_the_build_context_leaves_out_compiled_files_in_every_folder():
    """``make test`` writes bytecode next to the sources (``__pycache__/``, as any Python run
    without PYTHONDONTWRITEBYTECODE): .dockerignore's ``__pycache__/`` and ``*.pyc`` matched at
    the context's root alone (Docker's patterns do not cross folders), so the image took every
    package's compiled files, built by another Python, from the developer's checkout."""
    for path in (
        "order_archiver/__pycache__/errors.cpython-311.pyc",
        "order_archiver/batch/job.cpython-311.pyc",
    ):
        assert docker_ignored(path), path
    assert docker_ignored(".env")
    assert not docker_ignored(".env.example")
    assert not docker_ignored("order_archiver/batch/job.py")


def product_modules() -> set[str]:
    """The product's Python files but the demo (it starts a development server)."""
    return {str(path.relative_to(ROOT)) for path in product_files()} - {"demo.py"}


def test_dockerfile_runs_as_non_root_without_secrets():
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert not re.search(
        r"^(ENV|ARG).*(MONGODB_URI|PASSWORD|ARCHIVE_PII_KEY)", text, re.MULTILINE | re.IGNORECASE
    )
    assert not re.search(r"^COPY\s+(\.|\.env)\s", text, re.MULTILINE)  # no whole-context or .env copy
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    cmd = re.search(r"^CMD\s+(\[.*\])", text, re.MULTILINE).group(1)
    parses(yaml.safe_load(cmd))
    assert yaml.safe_load(cmd)[0] == "watch"


def test_the_image_holds_the_product_and_nothing_of_development():
    """Every product module is in the image, without a list of them to keep; the development
    server, its definitions and the demo (which starts one) are not, nor imported by it."""
    copied = {name for name in image_files() if name.endswith(".py")}
    assert copied == product_modules()
    assert not {name for name in copied if name.startswith(("teststand/", "tests/", "bench/"))}
    for module in product_modules():
        source = (ROOT / module).read_text()
        assert not re.search(r"^\s*(from|import) (teststand|demo|tests)\b", source, re.MULTILINE), module


@pytest.fixture
def manifests():
    documents = {}
    for path in (DEPLOY / "kubernetes").glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            kind = document["kind"]
            if kind == "NetworkPolicy":  # one per component
                kind = f"NetworkPolicy:{document['metadata']['labels']['component']}"
            documents[kind] = document
    return documents


def containers(document):
    spec = (
        document["spec"]["template"]["spec"]
        if document["kind"] in ("Deployment", "Job")
        else (document["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    )
    return spec, spec["containers"]


# #31 item 9: each workload its own MongoDB user (deploy/mongodb-roles.js), so its own key.
URI_KEYS = {"Deployment": "mongodb-uri-watch", "CronJob": "mongodb-uri-batch", "Job": "mongodb-uri-batch"}


@pytest.mark.parametrize("kind", ["Deployment", "CronJob", "Job"])
def test_manifests_are_non_root_and_take_the_uri_from_a_secret(manifests, kind):
    spec, (container,) = containers(manifests[kind])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # #31 item 10: the URI from the secret mounted as a file (MONGODB_URI_FILE), never an
    # environment variable (a child process, /proc/<pid>/environ, a crash dump show those).
    assert "MONGODB_URI" not in {e["name"] for e in container["env"]}
    path = next(e["value"] for e in container["env"] if e["name"] == "MONGODB_URI_FILE")
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "order-archiver-mongodb"
    assert volume["secret"]["items"] == [{"key": URI_KEYS[kind], "path": path.rsplit("/", 1)[1]}]
    assert volume["secret"]["defaultMode"] == 0o400
    parses(container["args"])


def test_watch_deployment_probes_readiness_by_status_liveness_by_this_process(manifests):
    """Readiness is the deployment's health (status); liveness this process's loop (/healthz on
    the metrics port): a restart fixes neither another watcher nor a MongoDB outage."""
    _, (container,) = containers(manifests["Deployment"])
    assert container["args"][0] == "watch"
    command = container["readinessProbe"]["exec"]["command"]
    assert main_args(command)[0] == "status"
    parses(main_args(command))
    liveness = container["livenessProbe"]
    assert "exec" not in liveness
    assert liveness["httpGet"]["path"] == "/healthz"
    (port,) = [p for p in container["ports"] if p["name"] == liveness["httpGet"]["port"]]
    args = container["args"]
    assert str(port["containerPort"]) == args[args.index("--metrics-port") + 1]


def test_cronjob_runs_batch_and_never_overlaps(manifests):
    _, (container,) = containers(manifests["CronJob"])
    assert container["args"][:2] == ["batch", "--run"]
    assert manifests["CronJob"]["spec"]["concurrencyPolicy"] == "Forbid"
    # Incremental, as the systemd unit: a --date-from window would never archive an order
    # delivered late whose date_commande fell out of it (and each window keeps its own checkpoint).
    assert "--date-from" not in container["args"]


def test_the_backfill_job_gives_each_pod_its_own_share_of_one_partition(manifests):
    """#34 item 5: an Indexed Job whose pod K runs `batch --run` on share K/N, N its completions
    (and its parallelism: all shares at once), K from the pod's completion index defined before
    BATCH_PARTITION (Kubernetes expands $(VAR) only from variables defined earlier in the list);
    fenced by the batch NetworkPolicy; 2 fails the Job, 3 runs its index again (the test below)."""
    from order_archiver.settings import parse_partition

    job = manifests["Job"]
    spec, (container,) = containers(job)
    assert job["spec"]["completionMode"] == "Indexed"
    count = job["spec"]["completions"]
    assert job["spec"]["parallelism"] == count > 1
    names = [variable["name"] for variable in container["env"]]
    index = container["env"][names.index("JOB_COMPLETION_INDEX")]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    partition = container["env"][names.index("BATCH_PARTITION")]["value"]
    assert names.index("JOB_COMPLETION_INDEX") < names.index("BATCH_PARTITION")
    shares = [parse_partition(partition.replace("$(JOB_COMPLETION_INDEX)", str(k))) for k in range(count)]
    assert shares == [(k, count) for k in range(count)]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.run, args.partition) == ("batch", True, None)  # the setting gives it
    assert spec["restartPolicy"] == "Never"
    rules = {
        rule["action"]: rule["onExitCodes"]["values"]
        for rule in job["spec"]["podFailurePolicy"]["rules"]
        if "onExitCodes" in rule
    }
    assert rules == {"FailJob": [2], "Count": [3]}
    assert job["spec"]["backoffLimitPerIndex"] >= 1  # exit 1 is retried, index by index
    batch_policy = manifests["NetworkPolicy:batch"]["spec"]["podSelector"]["matchLabels"]
    assert batch_policy.items() <= job["spec"]["template"]["metadata"]["labels"].items()


def pod_failure_action(rules, container, exit_code, conditions=()):
    """What a Job does with a failed pod, as Kubernetes decides it (the Pod failure policy: the
    rules in order, the first whose onExitCodes or onPodConditions matches applies; none: Count,
    the failure counted against the backoff limit, the index retried within it)."""
    for rule in rules:
        codes = rule.get("onExitCodes")
        mine = codes and codes.get("containerName", container) == container
        if mine and (exit_code in codes["values"]) == (codes["operator"] == "In"):
            return rule["action"]
        patterns = rule.get("onPodConditions", [])
        if any(p["type"] in conditions and p.get("status", "True") == "True" for p in patterns):
            return rule["action"]
    return "Count"


def test_the_backfill_job_is_bounded_and_complete_once_every_share_is_done(manifests, mongo, settings):
    """A new operator's read of the backfill Job: nothing bounded it (BATCH_MAX_RATE only: a
    server that answers nothing held its pods for ever; "ended at 6 h by the scheduler" was the
    CronJob's); exit 3, a share done with new invalid orders, was FailIndex, so a complete
    backfill ended Failed; a node drain (DisruptionTarget: the pod exits 1 on the SIGTERM)
    counted against backoffLimitPerIndex. Now: the Job's activeDeadlineSeconds (not
    --max-runtime, whose exit 0 Kubernetes would take for a share done), 3 counted and its index
    run again, which exits 0 (only new rejections make 3), drains ignored."""
    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.context import RunContext
    from order_archiver.orders.partition import Partition
    from order_archiver.settings import FLAG_ONLY
    from tests.helpers import seed_database

    job = manifests["Job"]["spec"]
    _, (container,) = containers(manifests["Job"])
    assert 0 < job["activeDeadlineSeconds"] <= 7 * 24 * 3600
    assert not {"--max-runtime", "--stop-file", "--limit"} & set(container["args"])
    assert not set(FLAG_ONLY) & {variable["name"] for variable in container["env"]}
    rules = job["podFailurePolicy"]["rules"]
    assert pod_failure_action(rules, "batch", 2) == "FailJob"  # bad configuration: every index alike
    assert pod_failure_action(rules, "batch", 1, {"DisruptionTarget"}) == "Ignore"  # a drain
    assert pod_failure_action(rules, "batch", 1) == "Count"  # failed: retried
    assert pod_failure_action(rules, "batch", 3) == "Count"  # done, news: run again
    assert job["backoffLimitPerIndex"] >= 1
    # What that second run of a share does (a mongomock stand-in for the share's next pod, its
    # checkpoint and rejects list in the database): exit 3 once, then 0.
    seed_database(mongo[settings.mongodb_database], settings, 400, p_anomalies=0.15)
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)

    def share(k):
        options = BatchOptions(run=True, batch_size=25, partition=Partition(k, 4))
        context = RunContext(clock=lambda: now)
        return BatchArchiver(mongo, settings, options, context=context, server_clock=lambda: now).run()

    first = share(0)
    assert first.rejected_new > 0  # exit 3
    again = share(0)
    assert again.rejected_new == 0  # exit 0: the index completes


def test_secret_example_holds_no_real_password_and_one_user_per_workload(manifests):
    uris = manifests["Secret"]["stringData"]
    assert set(uris) == set(URI_KEYS.values())
    assert all("REPLACE-ME" in uri for uri in uris.values())
    users = {key: uri.split("//", 1)[1].split(":", 1)[0] for key, uri in uris.items()}
    assert users == {"mongodb-uri-watch": "order-archiver-watch", "mongodb-uri-batch": "order-archiver-batch"}


@pytest.mark.parametrize("unit", ["order-archiver-watch.service", "order-archiver-batch.service"])
def test_systemd_units_run_valid_commands_as_a_service_user(unit):
    text = (DEPLOY / "systemd" / unit).read_text()
    command = shlex.split(re.search(r"^ExecStart=(.*)$", text, re.MULTILINE).group(1))
    parses(main_args(command))
    assert re.search(r"^User=(?!root)\S+", text, re.MULTILINE)
    assert "EnvironmentFile=" in text
    assert "MONGODB_URI=" not in text
    # #31 item 9: its own MongoDB user's URI, a systemd credential only this unit reads.
    process = unit.split("-")[2].split(".")[0]
    assert f"LoadCredential=mongodb-uri:/etc/order-archiver/{process}.uri" in text.splitlines()
    assert "Environment=MONGODB_URI_FILE=%d/mongodb-uri" in text.splitlines()
    # #31 item 7: systemd creates LogsDirectory 0755 by default; the logs name orders and ids.
    assert "LogsDirectoryMode=0700" in text
    assert "StateDirectory=" not in text or "StateDirectoryMode=0700" in text


def test_roles_script_grants_least_privilege():
    text = (DEPLOY / "mongodb-roles.js").read_text()
    assert '"find", "changeStream"' in text
    assert '["insert", "update", "createIndex"]' in text  # orderArchiverBatch's, on the archive
    assert '["remove"]' in text
    assert "orderArchiverPurge" in text
    assert "orderArchiverRestore" in text
    assert "passwordPrompt()" in text
    # ARCHIVE_MONGODB_URI: one run per deployment, each granting only its side's privileges.
    assert 'const SIDE = "both";' in text
    assert 'SIDE === "archive" ? [] :' in text
    assert 'SIDE === "source" ? [] :' in text


def test_the_roles_are_read_whole_and_restore_has_its_own():
    """tests/privileges.py reads each role's privileges with the script's constants resolved
    (what tests/integration/test_privileges_nx.py compares with the wire)."""
    roles = shipped_roles(DEPLOY / "mongodb-roles.js")
    assert roles["orderArchiverRestore"] == [
        ("livraison", "Commande", frozenset({"insert"})),
        ("livraison", "Commande_archive", frozenset({"update"})),  # restored_at
        (
            "livraison",
            "archiver_checkpoints",
            frozenset({"insert", "update", "remove"}),
        ),  # a cold order's mark
    ]
    assert ("livraison", "Menu", frozenset({"find"})) in roles["orderArchiverRead"]  # REFERENCES.map
    assert ("livraison", "", frozenset({"listCollections"})) in roles["orderArchiverRead"]
    orders = [p for p in roles["orderArchiverRead"] if p[1] == "Commande"]
    assert orders == [
        ("livraison", "Commande", frozenset({"find", "changeStream", "listIndexes"}))
    ]  # never a write


# Whoever holds them can make a TTL index that deletes the archive (createIndex with
# expireAfterSeconds, collMod), drop its unique index, or delete from it.
DANGEROUS_ON_THE_ARCHIVE = {"createIndex", "collMod", "dropIndex", "remove"}


def test_the_watchers_user_holds_no_index_action_nor_delete_on_the_archive():
    """#31 item 9: the long-running watcher's roles (as docs/deployment.md names them for watch,
    and as the script grants its user) hold none of them; the batch's hold what it builds."""
    roles = shipped_roles(DEPLOY / "mongodb-roles.js")
    named = documented_roles(ROOT / "docs" / "deployment.md")
    text = (DEPLOY / "mongodb-roles.js").read_text()
    user = text.split('user: "order-archiver-watch"', 1)[1].split("});", 1)[0]
    assert set(named["watch"]) == set(re.findall(r'"(orderArchiver\w+)"', user))

    def on_the_archive(role_names: list[str]) -> set[str]:
        return {
            action
            for role in role_names
            for _, collection, actions in roles[role]
            if collection in ("Commande_archive", "")
            for action in actions
        }

    assert not on_the_archive(named["watch"]) & DANGEROUS_ON_THE_ARCHIVE
    assert {"insert", "update"} <= on_the_archive(named["watch"])
    assert "createIndex" in on_the_archive(named["batch --run"])
    assert {"collMod", "dropIndex", "remove"} <= on_the_archive(named["batch --run (ARCHIVE_RETENTION)"])
    # restore --run and forget --run: neither the watcher's nor the batch's writes.
    for command in ("restore --run", "forget --run"):
        assert not {"orderArchiverWatch", "orderArchiverBatch"} & set(named[command])


@pytest.mark.parametrize(
    "body", [{"dropDatabase": 1}, {"aggregate": "Commande", "pipeline": [{"$out": "elsewhere"}]}]
)
def test_a_command_without_a_privilege_rule_fails_the_comparison(body):
    with pytest.raises(NoRule):
        required("livraison", body)


def test_an_upsert_needs_insert_and_a_change_stream_needs_find():
    upsert = {"update": "Commande_archive", "updates": [{"q": {}, "u": {}, "upsert": True}]}
    assert {p.action for p in required("db", upsert)} == {"update", "insert"}
    stream = {"aggregate": "Commande", "pipeline": [{"$changeStream": {}}, {"$match": {}}]}
    assert {p.action for p in required("db", stream)} == {"changeStream", "find"}
    lookup = {"aggregate": "Commande", "pipeline": [{"$lookup": {"from": "Client", "as": "c"}}]}
    assert required("db", lookup) == {Privilege("db", "Commande", "find"), Privilege("db", "Client", "find")}


def test_nssm_recipe_stops_with_ctrl_c():
    text = (DEPLOY / "windows" / "NSSM.md").read_text()
    assert "AppStopMethodConsole" in text
    assert "nssm install order-archiver" in text
    command = re.search(r'nssm install order-archiver "[^"]+" "([^"]+)"', text).group(1)
    parses(main_args(shlex.split(command)))


def test_the_package_installs_and_one_version_everywhere(manifests):
    """#33 item 1: the package is installable (the faces are not: their names would land at the
    top of site-packages), with the command `order-archiver`; its dependencies are
    requirements.in's, at the same versions; the version is order_archiver.__version__, and
    the image tags and the CHANGELOG say the same."""
    import tomllib

    from order_archiver import __version__

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"order-archiver": "order_archiver.cli.main:main"}
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["order_archiver*"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "order_archiver.__version__"}
    pinned = [
        line.strip()
        for line in (ROOT / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert project["project"]["dependencies"] == pinned
    # every product module (and the test server), listed nowhere
    assert project["tool"]["mypy"]["files"] == ["*.py", "order_archiver", "teststand"]
    assert project["tool"]["mypy"]["strict"] is True  # the product's boundaries typed (#23)
    images = [
        container["image"]
        for kind in ("CronJob", "Deployment", "Job")
        for container in _pod_spec(manifests[kind])["containers"]
    ]
    assert images
    # #31 item 10: the image by digest, never by a tag a push can move (the placeholder until
    # the operator puts the pushed image's digest); the release it is, in the workload's label.
    for image in images:
        assert re.fullmatch(r"registry\.example/order-archiver@sha256:(<digest>|[0-9a-f]{64})", image), image
    versions = {
        manifests[kind]["metadata"]["labels"]["app.kubernetes.io/version"]
        for kind in ("CronJob", "Deployment", "Job")
    }
    assert versions == {__version__}
    releases = re.findall(r"^## \[(\d[^\]]*)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert releases[0] == __version__


def _pod_spec(manifest: dict) -> dict:
    spec = manifest["spec"]
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def test_schedulers_treat_the_exit_codes_as_the_readme_documents(manifests):
    """0 done; 1 failed (retry); 2 bad configuration and 3 new invalid orders: failed, no retry
    (a retry would exit 0, the rejected orders being listed by then, and hide them)."""
    job = manifests["CronJob"]["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    fail_at_once = [r for r in rules if r["action"] == "FailJob"]
    assert fail_at_once
    assert sorted(fail_at_once[0]["onExitCodes"]["values"]) == [2, 3]
    assert fail_at_once[0]["onExitCodes"]["operator"] == "In"
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert job["backoffLimit"] >= 1  # exit 1 is retried
    assert pod_failure_action(rules, "batch", 1) == "Count"
    assert pod_failure_action(rules, "batch", 1, {"DisruptionTarget"}) == "Ignore"  # a node drain
    unit = (DEPLOY / "systemd" / "order-archiver-batch.service").read_text()
    assert not re.search(r"^SuccessExitStatus=.*\b3\b", unit, re.MULTILINE)  # 3 is worth a person's look
    operating = (ROOT / "docs" / "operating.md").read_text()
    table = operating.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    assert "new invalid orders" in table
    assert "main.py rejects" in table


def test_grace_periods_outlast_the_stop_bound(manifests):
    """SIGTERM ends watch and batch within main.STOP_GRACE_S (plus the exit) whatever the server
    does; the schedulers wait longer before they SIGKILL, so a stop is always a clean one."""
    from order_archiver.cli.main import STOP_GRACE_S

    bound = STOP_GRACE_S + 2
    for kind in ("Deployment", "CronJob", "Job"):
        spec, _ = containers(manifests[kind])
        assert spec.get("terminationGracePeriodSeconds", 30) > bound  # 30: Kubernetes' default
    for unit in ("order-archiver-watch.service", "order-archiver-batch.service"):
        text = (DEPLOY / "systemd" / unit).read_text()
        found = re.search(r"^TimeoutStopSec=(\d+)", text, re.MULTILINE)
        assert (int(found.group(1)) if found else 90) > bound  # 90: systemd's default


def test_a_batch_held_by_a_server_that_never_answers_is_ended_before_the_next_night(manifests):
    """No command carries a time limit (an index build must not: indexes.py), and a server that
    accepts the connection and answers nothing holds a read for ever: the schedulers, which
    start no run while one is running (Forbid, a oneshot unit), must end it. A working run ends
    first, cleanly, at its --max-runtime; the deadline (SIGTERM: exit 1 within STOP_GRACE_S)
    comes after it and before the next night."""
    from order_archiver.settings import parse_duration

    day = 24 * 3600
    _, (container,) = containers(manifests["CronJob"])
    args = container["args"]
    runtime = parse_duration(args[args.index("--max-runtime") + 1]).total_seconds()
    deadline = manifests["CronJob"]["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    assert runtime < deadline < day
    text = (DEPLOY / "systemd" / "order-archiver-batch.service").read_text()
    command = re.search(r"^ExecStart=(.*)$", text, re.MULTILINE).group(1).split()
    runtime = parse_duration(command[command.index("--max-runtime") + 1]).total_seconds()
    timeout = parse_duration(re.search(r"^TimeoutStartSec=(\S+)$", text, re.MULTILINE).group(1))
    assert runtime < timeout.total_seconds() < day


def test_metrics_listen_on_this_host_unless_told_and_the_pods_are_fenced(manifests):
    """The metrics endpoint answered any path on every interface by default: it listens on
    127.0.0.1 unless --metrics-address says otherwise; the pod that must open it to Prometheus
    says so, and a NetworkPolicy lets only Prometheus in and only MongoDB and DNS out."""
    args = build_parser().parse_args(["watch", "--metrics-port", "9108"])
    assert args.metrics_address == "127.0.0.1"
    unit = (DEPLOY / "systemd" / "order-archiver-watch.service").read_text()
    assert "0.0.0.0" not in unit.split("ExecStart=", 1)[1].splitlines()[0]
    _, (container,) = containers(manifests["Deployment"])
    assert container["args"][container["args"].index("--metrics-address") + 1] == "0.0.0.0"
    for kind in ("Deployment", "CronJob", "Job"):
        assert containers(manifests[kind])[0]["automountServiceAccountToken"] is False
    policy = manifests["NetworkPolicy:watch"]["spec"]
    assert policy["podSelector"]["matchLabels"] == manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [9108]
    assert {p["port"] for rule in policy["egress"] for p in rule["ports"]} == {27017, 53}
    # #31 item 10: the batch pods are fenced too, nothing in, MongoDB and DNS out.
    batch = manifests["NetworkPolicy:batch"]["spec"]
    pod_labels = manifests["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert batch["podSelector"]["matchLabels"] == pod_labels
    assert set(batch["policyTypes"]) == {"Ingress", "Egress"}
    assert batch["ingress"] == []
    assert {p["port"] for rule in batch["egress"] for p in rule["ports"]} == {27017, 53}


def test_the_pods_reach_only_the_database_and_the_clusters_dns(manifests):
    """#31 item 10: an egress rule without ``to`` allows every address. MongoDB's rule names
    its peers (a placeholder CIDR that reaches nothing until edited, marked EDIT-ME, or the
    operator's selectors), DNS's the cluster's DNS pods."""
    for component in ("watch", "batch"):
        path = (
            DEPLOY
            / "kubernetes"
            / ("watch-deployment.yaml" if component == "watch" else "batch-cronjob.yaml")
        )
        egress = manifests[f"NetworkPolicy:{component}"]["spec"]["egress"]
        assert all(rule.get("to") for rule in egress), f"{component}: an egress rule open to any address"
        by_port = {port["port"]: rule for rule in egress for port in rule["ports"]}
        assert set(by_port) == {27017, 53}
        (database,) = by_port[27017]["to"]
        if "ipBlock" in database:
            assert database["ipBlock"]["cidr"] != "0.0.0.0/0"
            if database["ipBlock"]["cidr"] == "192.0.2.0/24":  # RFC 5737: documentation only
                line = next(line for line in path.read_text().splitlines() if "192.0.2.0/24}" in line)
                assert "EDIT-ME" in line
        else:
            assert {"namespaceSelector", "podSelector"} & set(database)
        (dns,) = by_port[53]["to"]
        assert dns["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
        assert dns["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_the_metrics_endpoint_binds_the_loopback_by_default():
    from order_archiver.reporting.metrics import WatchMetrics

    served = WatchMetrics().serve(0)
    try:
        server = served[0] if isinstance(served, tuple) else served
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze on this machine")
@pytest.mark.parametrize(
    "unit", ["order-archiver-watch.service", "order-archiver-batch.service", "order-archiver-health.service"]
)
def test_the_systemd_units_are_hardened(unit, tmp_path):
    """``systemd-analyze security`` scored both units 8.5-8.8 "EXPOSED"; every unit holds 3.0 or better."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(DEPLOY / "systemd" / unit)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 3.0, result.stdout
    assert "UMask=0077" in (DEPLOY / "systemd" / unit).read_text()


def test_the_watch_deployment_runs_a_hot_standby(manifests):
    """An SRE's read of the manifest: "one replica (a second one would archive the same
    deliveries again ... until leases land)": leases had landed, and Kubernetes ran no standby.
    Two replicas of one --name on the mongo store (the lease needs it), replaced one at a time."""
    deployment = manifests["Deployment"]
    _, (container,) = containers(deployment)
    args = container["args"]
    assert args[args.index("--token-store") + 1] == "mongo"
    assert "--name" in args
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "until leases land" not in (DEPLOY / "kubernetes" / "watch-deployment.yaml").read_text()


def test_the_prometheus_selector_is_a_placeholder_said_so(manifests):
    """The watch pods let in only pods labelled ``app.kubernetes.io/name: prometheus`` in a
    namespace named ``monitoring``, unmarked: anywhere else nothing scraped them, and every
    watcher alert had no data. Each of its lines says EDIT-ME, as the other placeholders do."""
    text = (DEPLOY / "kubernetes" / "watch-deployment.yaml").read_text().splitlines()
    (rule,) = manifests["NetworkPolicy:watch"]["spec"]["ingress"]
    (peer,) = rule["from"]
    for selector in ("namespaceSelector", "podSelector"):
        for key, value in peer[selector]["matchLabels"].items():
            line = next(line for line in text if f"{key}: {value}" in line and "matchLabels" in line)
            assert "EDIT-ME" in line, line


def test_install_lines_schedule_zone_and_image_copy_say_exactly_what_they_mean(manifests):
    """The settings file root's (the service reads it, never rewrites its own settings), the
    service user without a shell wherever it is created, the CronJob's schedule in a named zone
    (else the controller manager's local time), and no glob in the image's COPY (a stray
    top-level script in the checkout would ship)."""
    for path in (DEPLOY / "systemd" / "env.example", DEPLOY / "systemd" / "order-archiver-watch.service"):
        text = path.read_text()
        assert "install -m 640 -o root -g order-archiver deploy/systemd/env.example" in text, path
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert "install -m 640 -o root -g order-archiver deploy/systemd/env.example" in docs
    for text in (docs, (DEPLOY / "systemd" / "order-archiver-watch.service").read_text()):
        for line in re.findall(r"useradd .*", text):
            assert "--shell /usr/sbin/nologin" in line, line
    assert manifests["CronJob"]["spec"]["timeZone"] == "Etc/UTC"
    copies = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert not [source for source in copies if "*" in source]
