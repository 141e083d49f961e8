"""The README and the docs/ pages say only what is true of the code: every command they show
parses with the real parser, every setting they name exists, every make target exists,
every page they link to exists; and the README stays a newcomer's page."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from order_archiver.cli.main import build_parser, build_simulate_parser
from order_archiver.settings import ENV_VARS, FLAG_ONLY

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The product's contract (docs/ follows it); a copy shared by every checkout of the project.
CONTRACT = Path("/work/shared/contract.md")

# Upper-case names the pages use that are not the archiver's settings (the tests', the test
# server's, the system's).
NOT_SETTINGS = {
    # The AWS SDK's own (the cold tier on S3 through pyarrow.fs): read by it, not by config.py.
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_PROFILE",
    "TEST_MONGODB_URI",
    "NX_MONGODB_VERSION",
    "NX_REPLICA_SET",
    "NX_RESUME_RETENTION_ROWS",
    "NX_EVENT_CLOCK_AHEAD_S",
    "NX_CLOCK_AHEAD_S",
    "NX_MAX_BSON_OBJECT_SIZE",
    "NX_PERIODIC_NOOP_S",
    "NX_PLAIN_USERS",
    "NX_FAULT_WRITE_CONCERN",
    "NX_FAULT_REFUSE_NUMERO",
    "NX_FAULT_REFUSE_ALL",
    "NX_FAULT_COMMAND_TOO_LARGE",
    "NX_FAULT_REFUSE_INSERT",
    "NX_FAULT_ARCHIVE",
    "NX_FAULT_ELECTION",
    "NX_SLOW_READS_FILE",
    "NX_INDEX_BUILD_ABORT_OVER",
    "NX_INDEX_BUILD_SECONDS",
    "NX_MAX_ACTIVE_INDEX_BUILDS",
    "NX_SCAN_TIME_LIMIT_OVER",
    "NX_SORT_MEMORY_OVER",
    "NX_DEFAULT_MAX_TIME_DOCS",
    "NX_MONGOS",
    "NX_SHARDED_COLLECTIONS",
    "STOP_GRACE_S",
    "PURGE_AFTER",
    "RESTORE_HOLD",
    "ARCHIVE_RETENTION",
    "ARCHIVE_PII_RETENTION",
    "JOB_COMPLETION_INDEX",  # Kubernetes': an Indexed Job's pod index (deployment.md)
    # Misspelt on purpose: configuration.md's examples of names refused as near misses.
    "PII_RETENTION",
    "COLD_URL",
    "TLS_CA_FILE",
    "ARCHIVE_PURGE_AFTER",
    # batch's flags written as settings: configuration.md names them, refused (settings.FLAG_ONLY).
    *FLAG_ONLY,
}


def shell_lines(text: str) -> list[str]:
    lines = []
    for block in re.findall(r"```(?:sh)?\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    inline = re.findall(r"`((?:\.venv/bin/)?python (?:main|simulate)\.py[^`]*)`", text)
    return lines + inline


def invocations(text: str) -> list[list[str]]:
    found = []
    for line in shell_lines(text):
        for part in re.split(r"&&|\|\|", line):
            try:
                words = shlex.split(part.replace("…", "").replace("...", ""))
            except ValueError:
                continue
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # VAR=value before the command
            if len(words) >= 2 and words[0].endswith("python") and words[1] in ("main.py", "simulate.py"):
                found.append(words[1:])
    return found


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_command_shown_parses(page):
    for script, *args in invocations(page.read_text()):
        if any(a in ("COMMAND", "NAME") or a.isupper() for a in args[:1]):
            continue  # a placeholder, not a command
        parser = build_parser() if script == "main.py" else build_simulate_parser()
        try:
            parsed = parser.parse_args([a for a in args if a not in ("-h", "--help")])
        except SystemExit as exc:
            raise AssertionError(f"{page.name}: {script} {' '.join(args)}") from exc
        assert callable(parsed.func)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_setting_named_exists(page):
    named = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(?:=[^`]*)?`", page.read_text()))
    unknown = named - set(ENV_VARS) - NOT_SETTINGS
    assert unknown == set(), f"{page.name} names settings config.py does not read"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_make_target_and_linked_page_exists(page):
    text = page.read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"`make ([a-z][\w-]*)", text) + re.findall(r"(?m)^make ([a-z][\w-]*)", text):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), f"{page.name}: make {target}"
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in link:
            assert (page.parent / link).exists(), f"{page.name}: {link}"


def test_the_readme_is_a_newcomers_page():
    """What it is, the two commands, a first archive, cron beside watch, what is kept and
    purged, then links: the rest lives in docs/."""
    readme = (ROOT / "README.md").read_text()
    headings = re.findall(r"(?m)^## (.*)$", readme)
    assert headings == [
        "Two commands",
        "A first archive on your own server",
        "Cron beside a running watcher",
        "What the archive keeps, and what the purge deletes",
        "Restoring orders",
        "Personal data and retention",
        "More",
    ]
    assert len(readme) < 8000
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README does not link {page.name}"


def test_the_deployment_page_lists_every_exit_code_the_contract_defines():
    """#32 item 8: the page to deploy from names every exit code (2 was missing), each in its
    table with what the schedulers do with it. The codes: errors.ExitCode, the product's one
    table of the contract's codes (checked against the contract where a checkout has it)."""
    from order_archiver.errors import ExitCode

    defined = {int(code) for code in ExitCode}
    if CONTRACT.is_file():
        sentence = re.search(r"Exit codes: (.*?)\n\n", CONTRACT.read_text(), re.DOTALL)
        assert sentence, "the contract's exit codes"
        assert {int(code) for code in re.findall(r"`(\d+)` ", sentence.group(1))} == defined
    page = (ROOT / "docs" / "deployment.md").read_text()
    assert "\n## Exit codes\n" in page, "docs/deployment.md: no Exit codes section"
    table = page.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = {int(code) for code in re.findall(r"(?m)^\| (\d+) \|", table)}
    assert listed == defined


def test_the_readmes_sample_of_make_run_is_what_make_run_prints(capsys, monkeypatch, tmp_path):
    """README shows `make run`'s summary: it said "(1 new; list: main.py rejects)" for months
    after the run said "(1 new)" (a simulation keeps no list) and left out the indexes it built.
    The sample is the run's own lines with its figures (counts, seconds, rates) as they come."""
    from order_archiver.cli.main import main

    readme = (ROOT / "README.md").read_text()
    sample = readme.split("`make run` ends with the run's summary, for example:\n\n```\n", 1)[1].split("```")[
        0
    ]
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    assert main(["batch", "--run", "--simulation"]) == 3  # what the Makefile's run target accepts
    printed = capsys.readouterr().out.splitlines()

    def shape(line: str) -> str:
        return re.sub(r"\d+(\.\d+)?", "N", line)

    assert [shape(line) for line in sample.strip().splitlines()] == [shape(line) for line in printed[:2]]
