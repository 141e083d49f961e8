import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from order_archiver.errors import ConfigError
from order_archiver.settings import ENV_VARS, Settings, load_settings, parse_date_bound, redact_uri

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)


def test_defaults_from_contract():
    settings, warnings = load_settings(environ={"MONGODB_URI": "mongodb://localhost:27017"})
    assert settings.mongodb_database == "livraison"
    assert settings.orders_collection == "Commande"
    assert settings.archive_collection == "Commande_archive"
    assert settings.archive_db_name == "livraison"
    assert settings.delivered_status == "livrée"
    assert settings.batch_size == 100
    assert warnings == []


def test_environment_wins_over_env_file_and_flags_win_over_both(tmp_path):
    env_file = tmp_path / "custom.env"
    env_file.write_text("MONGODB_URI=mongodb://file:27017\nBATCH_SIZE=7\nMONGODB_DATABASE=fromfile\n")
    env_file.chmod(0o600)
    settings, _ = load_settings(
        str(env_file), overrides={"batch_size": 9}, environ={"MONGODB_DATABASE": "fromenv"}
    )
    assert settings.mongodb_uri == "mongodb://file:27017"
    assert settings.mongodb_database == "fromenv"
    assert settings.batch_size == 9


def test_dotenv_in_working_directory_is_read(tmp_path):
    (tmp_path / ".env").write_text("MONGODB_URI=mongodb://dot:27017\n")
    settings, _ = load_settings(environ={})
    assert settings.mongodb_uri == "mongodb://dot:27017"


def test_world_readable_env_file_warns(tmp_path):
    path = tmp_path / ".env"
    path.write_text("MONGODB_URI=mongodb://u:p@h:27017\n")
    path.chmod(0o644)
    _, warnings = load_settings(environ={})
    assert any("readable by every user" in w for w in warnings)


def test_a_group_readable_or_foreign_env_file_warns(tmp_path, monkeypatch):
    import os

    path = tmp_path / ".env"
    path.write_text("MONGODB_URI=mongodb://u:p@localhost:27017\n")
    path.chmod(0o640)
    _, warnings = load_settings(environ={})
    assert any(".env is readable by its group; chmod 600 it" in w for w in warnings)
    path.chmod(0o600)
    assert load_settings(environ={})[1] == []
    monkeypatch.setattr(os, "getuid", lambda: os.stat(path).st_uid + 1)
    _, warnings = load_settings(environ={})
    assert any("belongs to another user" in w for w in warnings)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "MONGODB_URI is not set"),
        ({"MONGODB_URI": "http://h"}, "MONGODB_URI: must start with mongodb://"),
        ({"MONGODB_URI": "mongodb://"}, "MONGODB_URI: must start with mongodb://"),
        ({"MONGODB_URI": "mongodb://h:notaport"}, "MONGODB_URI: malformed"),
        ({"MONGODB_URI": "mongodb://h", "BATCH_SIZE": "ten"}, "BATCH_SIZE: expected a whole number"),
        ({"MONGODB_URI": "mongodb://h", "BATCH_SIZE": "0"}, "BATCH_SIZE: expected a number of at least 1"),
        ({"MONGODB_URI": "mongodb://h", "LOG_FORMAT": "xml"}, "LOG_FORMAT: expected one of text, json"),
        ({"MONGODB_URI": "mongodb://h", "LOG_LEVEL": "LOUD"}, "LOG_LEVEL: expected one of"),
        ({"MONGODB_URI": "mongodb://h", "MONGODB_TIMEOUT_MS": "-5"}, "MONGODB_TIMEOUT_MS"),
        ({"MONGODB_URI": "mongodb://h", "ORDERS_COLLECTION": "a/b"}, "ORDERS_COLLECTION: not a valid"),
        (
            {"MONGODB_URI": "mongodb://h", "ARCHIVE_PII": "encrypt"},
            "ARCHIVE_PII: expected one of keep, hash, drop",
        ),
        ({"MONGODB_URI": "mongodb://h", "ARCHIVE_PII": "hash"}, "ARCHIVE_PII=hash needs ARCHIVE_PII_KEY"),
        ({"MONGODB_URI": "mongodb://h", "ARCHIVE_PII": "hash", "ARCHIVE_PII_KEY": "short"}, "at least 16"),
        (
            {"MONGODB_URI": "mongodb://h", "ARCHIVE_RETENTION": "ten years"},
            "ARCHIVE_RETENTION: expected a duration",
        ),
        (
            {"MONGODB_URI": "mongodb://h", "ARCHIVE_RETENTION": "0d"},
            "ARCHIVE_RETENTION: must be longer than 0",
        ),
        ({"MONGODB_URI": "mongodb://h", "ARCHIVE_RETENTION": "25000d"}, "at most 24855d"),
        (
            {"MONGODB_URI": "mongodb://h", "ARCHIVE_PII_RETENTION": "0s"},
            "ARCHIVE_PII_RETENTION: must be longer",
        ),
        (
            {"MONGODB_URI": "mongodb://h", "ARCHIVE_RETENTION": "30d", "PURGE_AFTER": "90d"},
            "ARCHIVE_RETENTION (30d) is shorter than PURGE_AFTER (90d)",
        ),
        # pymongo's own message names no option ("Unknown option. Did you mean one of (...)?").
        (
            {"MONGODB_URI": "mongodb://u:pw@h/?retryWrite=true&tls=true"},
            "MONGODB_URI: malformed: unknown option 'retryWrite' (did you mean retryWrites?)",
        ),
        # The suggestion spelt as MongoDB's manual spells the option (pymongo keeps them in
        # lower case): a user copies it.
        (
            {"MONGODB_URI": "mongodb://h/?appNam=x&readPreferenc=primary&timeoutM=5"},
            "unknown option 'appNam' (did you mean appName?), 'readPreferenc' (did you mean "
            "readPreference?), 'timeoutM' (did you mean timeoutMS?)",
        ),
    ],
)
def test_bad_configuration_is_one_line_config_error(environ, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_malformed_uri_error_does_not_echo_the_password():
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MONGODB_URI": "mongodb://bob:s3cr3t-pw@h:notaport"})
    assert "s3cr3t-pw" not in str(caught.value)


def test_missing_env_file_is_a_config_error():
    with pytest.raises(ConfigError, match="no such file"):
        load_settings("nope.env", environ={})


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"MONGODB_URI=mongodb://u:s3cr3t@h/\nthis is s3cr3t junk\n", "line 2: not NAME=value"),
        (b"MONGODB_URI=mongodb://h/\nARCHIVE_PII=\xff\n", r"not UTF-8 text \(byte 0xff at offset 37\)"),
        (b"MONGODB_URI=mongodb://h/\nARCHIVE_RETENTION\n", "line 2: not NAME=value"),  # dropped silently
    ],
)
def test_an_env_file_it_cannot_read_whole_is_named_in_one_line(tmp_path, content, said):
    """python-dotenv logged its own "could not parse statement starting at line 2" and the run
    went on without what that line meant; an undecodable file said "UnicodeDecodeError"."""
    path = tmp_path / "bad.env"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=said) as caught:
        load_settings(str(path), environ={})
    assert "s3cr3t" not in str(caught.value)


def test_an_env_file_without_read_permission_says_so(tmp_path, monkeypatch):
    path = tmp_path / "locked.env"
    path.write_text("MONGODB_URI=mongodb://h/\n")
    path.chmod(0o600)

    def refused(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")  # what open() raises for another user

    monkeypatch.setattr(Path, "read_text", refused)
    with pytest.raises(ConfigError, match=r"locked\.env: permission denied"):
        load_settings(str(path), environ={})


def test_simulation_needs_no_uri():
    settings, _ = load_settings(overrides={"simulation": True}, environ={})
    assert settings.simulation
    assert settings.mongodb_uri is None


def test_delivered_status_is_nfc_normalised():
    decomposed = "livre\u0301e"
    settings, _ = load_settings(environ={"MONGODB_URI": "mongodb://h", "DELIVERED_STATUS": decomposed})
    assert settings.delivered_status == "livrée"


def test_env_example_documents_every_variable_with_its_default():
    text = (ROOT / ".env.example").read_text()
    defaults = Settings()
    for var, (field, _) in ENV_VARS.items():
        assert f"\n{var}=" in text, var
        if var != "MONGODB_URI":
            line = next(line for line in text.splitlines() if line.startswith(f"{var}="))
            default = getattr(defaults, field)
            assert line.split("=", 1)[1] == ("" if default is None else str(default)), var


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mongodb://bob:pw@h:27017/db", "mongodb://bob:***@h:27017/db"),
        (
            "mongodb+srv://bob:p%40ss@cluster.example.net/?x=1",
            "mongodb+srv://bob:***@cluster.example.net/?x=1",
        ),
        ("mongodb://h:27017/?password=abc&tls=true", "mongodb://h:27017/?password=***&tls=true"),
        ("mongodb://h:27017", "mongodb://h:27017"),
        ("see mongodb://a:b@h and mongodb://c:d@k", "see mongodb://a:***@h and mongodb://c:***@k"),
    ],
)
def test_redact_uri(uri, expected):
    assert redact_uri(uri) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("today", datetime(2026, 11, 26, tzinfo=UTC)),
        ("yesterday", datetime(2026, 11, 25, tzinfo=UTC)),
        ("7d", datetime(2026, 11, 19, tzinfo=UTC)),
        ("0d", datetime(2026, 11, 26, tzinfo=UTC)),
        ("2026-01-05", datetime(2026, 1, 5, tzinfo=UTC)),
        ("2026-01-05T10:30:00", datetime(2026, 1, 5, 10, 30, tzinfo=UTC)),
        ("2026-01-05T10:30:00+02:00", datetime(2026, 1, 5, 8, 30, tzinfo=UTC)),
        ("2026-01-05T10:30:00Z", datetime(2026, 1, 5, 10, 30, tzinfo=UTC)),
    ],
)
def test_parse_date_bound(text, expected):
    assert parse_date_bound(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "tomorrow", "2026-13-01", "-3d", "3 days", "05/01/2026"])
def test_parse_date_bound_rejects(text):
    with pytest.raises(ValueError, match="expected YYYY-MM-DD"):
        parse_date_bound(text, NOW)


def test_tls_files_pass_through_to_the_client(tmp_path):
    import certifi

    from order_archiver.mongodb.connection import client_options

    ca = tmp_path / "ca.pem"
    ca.write_text(Path(certifi.where()).read_text())  # a CA bundle holds a certificate (checked)
    from tests.helpers import self_signed_pem

    cert = tmp_path / "client.pem"
    cert.write_bytes(self_signed_pem())  # a certificate and its key (checked)
    settings, _ = load_settings(
        environ={
            "MONGODB_URI": "mongodb://h:27017/?tls=true&tlsAllowInvalidHostnames=false",
            "MONGODB_TLS_CA_FILE": str(ca),
            "MONGODB_TLS_CERT_KEY_FILE": str(cert),
        }
    )
    options = client_options(settings)
    assert options["tls"] is True
    assert options["tlsCAFile"] == str(ca)
    assert options["tlsCertificateKeyFile"] == str(cert)
    plain, _ = load_settings(environ={"MONGODB_URI": "mongodb://h:27017/?tls=true"})
    assert "tls" not in client_options(plain)  # the URI's own TLS options are the driver's to read


def test_missing_tls_file_is_a_config_error():
    with pytest.raises(ConfigError, match="MONGODB_TLS_CA_FILE: no such file"):
        load_settings(environ={"MONGODB_URI": "mongodb://h", "MONGODB_TLS_CA_FILE": "/nope/ca.pem"})


def test_the_settings_table_matches_the_code():
    """Every variable config.py reads is in docs/configuration.md's table, with its default."""
    table = (ROOT / "docs" / "configuration.md").read_text()
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`") and cells[0].endswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    defaults = Settings()
    assert set(rows) == set(ENV_VARS)
    for var, (field, _) in ENV_VARS.items():
        default = getattr(defaults, field)
        if default is not None and var != "MONGODB_URI":
            assert rows[var].strip("`") == str(default), var


def test_the_module_map_is_the_tree():
    """docs/development.md's map, read as a tree (two spaces a level, folders end in /),
    names exactly the product's files and the test server's (teststand/, its tests aside)."""
    from tests.helpers import PROJECT, product_files

    module_map = (ROOT / "docs" / "development.md").read_text().split("```", 2)[1]
    listed, folders = set(), []
    for line in module_map.strip("\n").splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        folders[depth:] = []
        if name.endswith("/"):
            folders.append(name)
        elif name.endswith(".py"):
            listed.add("".join(folders) + name)
    stand = {
        str(path.relative_to(PROJECT))
        for path in PROJECT.glob("teststand/*.py")
        if path.name != "__init__.py"
    }
    product = {str(path.relative_to(PROJECT)) for path in product_files() if path.name != "__init__.py"}
    assert listed == product | stand


def test_the_same_names_on_two_deployments_are_two_collections():
    from order_archiver.settings import check_collection_roles

    clash = Settings(mongodb_uri="mongodb://a/", archive_collection="Commande")
    with pytest.raises(ConfigError, match="ARCHIVE_COLLECTION and ORDERS_COLLECTION"):
        check_collection_roles(clash)
    elsewhere = Settings(
        mongodb_uri="mongodb://a/", archive_mongodb_uri="mongodb://b/", archive_collection="Commande"
    )
    check_collection_roles(elsewhere)  # the archive's Commande is on another deployment
    assert elsewhere.archive_elsewhere
    assert not Settings(mongodb_uri="mongodb://a/").archive_elsewhere


def test_an_empty_value_is_not_set_except_where_empty_means_something():
    """The shipped .env.example leaves its optional lines empty (``ARCHIVE_MONGODB_URI=``):
    empty is "not set", the default; LOG_DIR= keeps its meaning, no log file."""
    from order_archiver.settings import load_settings

    environ = {
        "MONGODB_URI": "mongodb://h/",
        "ARCHIVE_MONGODB_URI": "",
        "BATCH_SIZE": " ",
        "MONGODB_DATABASE": "",
        "DELIVERED_STATUS": "",
        "LOG_DIR": "",
    }
    settings, _ = load_settings(environ=environ)
    assert settings.archive_mongodb_uri is None
    assert not settings.archive_elsewhere
    assert (settings.batch_size, settings.mongodb_database, settings.delivered_status) == (
        100,
        "livraison",
        "livrée",
    )
    assert settings.log_dir == ""


def test_an_aws_session_token_is_never_logged():
    """``authMechanismProperties=AWS_SESSION_TOKEN:...`` was written at DEBUG in the
    "connecting to" line: that line names the hosts only, and any text redacted masks the
    whole value."""
    from order_archiver.settings import Settings, redact_uri

    token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ"
    uri = (
        "mongodb+srv://cluster0.example.mongodb.net/?authMechanism=MONGODB-AWS"
        f"&authMechanismProperties=AWS_SESSION_TOKEN:{token}&retryWrites=true"
    )
    settings = Settings(mongodb_uri=uri)
    assert settings.uri_hosts == "mongodb+srv://cluster0.example.mongodb.net"
    assert token not in redact_uri(uri)
    assert "authMechanismProperties=***" in redact_uri(uri)
    assert "retryWrites=true" in redact_uri(uri)
    user = Settings(mongodb_uri="mongodb://u:p@h1:27017,h2:27017/db?replicaSet=rs0")
    assert user.uri_hosts == "mongodb://h1:27017,h2:27017"


@pytest.mark.parametrize(
    ("uri", "option"),
    [
        ("mongodb://db.example:27017/?tls=true&tlsInsecure=true", "tlsInsecure"),
        (
            "mongodb://db.example:27017/?tls=true&tlsAllowInvalidCertificates=true",
            "tlsAllowInvalidCertificates",
        ),
        ("mongodb+srv://cluster.example.net/?TLSALLOWINVALIDHOSTNAMES=true", "tlsAllowInvalidHostnames"),
    ],
)
def test_a_uri_that_switches_the_certificate_check_off_is_refused_unless_allowed(uri, option):
    """The option named as MongoDB's manual spells it (it said tlsinsecure)."""
    for name in ("MONGODB_URI", "ARCHIVE_MONGODB_URI"):
        environ = {"MONGODB_URI": "mongodb://localhost:27017", name: uri}
        with pytest.raises(
            ConfigError, match=f"^{name}: {option} switches the server's certificate check off"
        ):
            load_settings(environ=environ)
    load_settings(environ={"MONGODB_URI": uri, "MONGODB_ALLOW_INSECURE_TLS": "true"})  # a test deployment


def test_a_remote_host_without_tls_is_warned_about():
    _, warnings = load_settings(environ={"MONGODB_URI": "mongodb://u:p@db.example:27017/"})
    assert warnings == [
        "MONGODB_URI: db.example is reached without TLS: the password and the orders cross the network "
        "in clear (add tls=true)"
    ]
    # A new user's URI held no password, and the warning said that the password crossed the
    # network: it says what does.
    _, warnings = load_settings(environ={"MONGODB_URI": "mongodb://db.example:27017/"})
    assert warnings == [
        "MONGODB_URI: db.example is reached without TLS: the orders cross the network in clear (add tls=true)"
    ]
    for quiet in (
        "mongodb://localhost:27017/",
        "mongodb://127.0.0.1:27017,[::1]:27018/",
        "mongodb://db.example/?tls=true",
        "mongodb+srv://cluster.example.net/",
    ):
        assert load_settings(environ={"MONGODB_URI": quiet})[1] == [], quiet


def test_retention_settings_are_durations_and_unset_by_default():
    assert (Settings().archive_retention, Settings().archive_pii_retention) == (None, None)
    settings, warnings = load_settings(
        environ={"MONGODB_URI": "mongodb://h", "ARCHIVE_RETENTION": "3650d", "ARCHIVE_PII_RETENTION": "1095d"}
    )
    assert (str(settings.archive_retention), str(settings.archive_pii_retention)) == ("3650d", "1095d")
    assert not [w for w in warnings if "RETENTION" in w]


def test_a_pii_retention_the_archive_never_reaches_is_warned_about():
    _, warnings = load_settings(
        environ={"MONGODB_URI": "mongodb://h", "ARCHIVE_RETENTION": "365d", "ARCHIVE_PII_RETENTION": "400d"}
    )
    assert any(
        "ARCHIVE_PII_RETENTION (400d) is not shorter than ARCHIVE_RETENTION (365d)" in w for w in warnings
    )


def test_the_uri_can_come_from_a_mounted_file(tmp_path, capsys):
    """#31 item 10: MONGODB_URI_FILE, a secret mounted as a file, keeps the URI (and its
    password) out of the process's environment. One of the two; errors name the file only."""
    secret = tmp_path / "mongodb-uri"
    secret.write_text("mongodb://archiver:Fi1e-S3cret@db.example:27017/?authSource=admin\n")
    settings, _ = load_settings(None, environ={"MONGODB_URI_FILE": str(secret)})
    assert settings.mongodb_uri == "mongodb://archiver:Fi1e-S3cret@db.example:27017/?authSource=admin"
    with pytest.raises(ConfigError, match="MONGODB_URI and MONGODB_URI_FILE are both set"):
        load_settings(None, environ={"MONGODB_URI_FILE": str(secret), "MONGODB_URI": "mongodb://h/"})
    with pytest.raises(ConfigError, match="MONGODB_URI_FILE: no such file"):
        load_settings(None, environ={"MONGODB_URI_FILE": str(tmp_path / "missing")})
    secret.write_text("postgres://archiver:Fi1e-S3cret@db.example/")
    with pytest.raises(ConfigError) as refused:
        load_settings(None, environ={"MONGODB_URI_FILE": str(secret)})
    assert str(refused.value).startswith(f"MONGODB_URI_FILE {secret}: must start with mongodb://")
    assert "Fi1e-S3cret" not in str(refused.value)


def test_a_file_named_like_a_password_key_is_not_masked():
    """``/etc/passwd: not a folder`` names a file, not a password: the message keeps its words
    (a new user read 'file:///etc/passwd: *** a folder'); a key after anything else is masked."""
    assert redact_uri("ARCHIVE_COLD_URL file:///etc/passwd: not a folder").endswith("passwd: not a folder")
    assert redact_uri("MONGODB_PASSWORD=abc password: hunter2") == "MONGODB_PASSWORD=*** password: ***"


def test_a_simulation_takes_no_real_place_from_the_env_file(tmp_path, monkeypatch, capsys):
    """A new user's try: with their real server's cold tier in .env, ``make run`` (batch --run
    --simulation) said "not archived: the cold tier's" and wrote its probe file in the real cold
    folder: generated orders could have been published there. A settings file is a
    deployment's: a simulation takes none of its places (servers, cold tier, log folder), says
    which in one line, and archives every generated delivered order."""
    from tests.helpers import run_in_process

    cold, logs, project = tmp_path / "real_cold", tmp_path / "real_logs", tmp_path / "project"
    cold.mkdir()
    project.mkdir()
    (project / ".env").write_text(
        "MONGODB_URI=mongodb://prod.example:27017/\n"
        f"ARCHIVE_COLD_URL=file://{cold}\nARCHIVE_COLD_AFTER=30d\nLOG_DIR={logs}\nBATCH_SIZE=50\n"
    )
    (project / ".env").chmod(0o600)
    simulated = ("batch", "--run", "--simulation", "--count", "300")
    result = run_in_process(*simulated, env={}, cwd=project, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode in (0, 3), result.stderr
    assert "ARCHIVE_COLD_AFTER" not in result.stdout  # "not archived: the cold tier's"
    assert list(cold.iterdir()) == []  # not even the probe file
    assert not logs.exists()
    [said] = [line for line in result.stderr.splitlines() if "--simulation: ignored" in line]
    assert "ignored ARCHIVE_COLD_URL, ARCHIVE_COLD_AFTER, LOG_DIR from .env" in said
    assert "WARNING" in said
    assert "cold tier" not in result.stdout
    assert "prod.example" not in result.stdout + result.stderr


def test_a_simulation_keeps_a_cold_tier_the_environment_gives(tmp_path):
    """``ARCHIVE_COLD_URL=file:///tmp/try ... batch --simulation``: the command's own choice is
    kept (with the file's ARCHIVE_COLD_AFTER); the file's log folder is still a deployment's."""
    (tmp_path / ".env").write_text(f"ARCHIVE_COLD_AFTER=30d\nLOG_DIR={tmp_path / 'real_logs'}\n")
    (tmp_path / ".env").chmod(0o600)
    environ = {"ARCHIVE_COLD_URL": f"file://{tmp_path}/try"}
    settings, warnings = load_settings(overrides={"simulation": True}, environ=environ)
    assert (settings.archive_cold_url, str(settings.archive_cold_after)) == (f"file://{tmp_path}/try", "30d")
    assert settings.log_dir == "logs"
    assert [w for w in warnings if "ignored LOG_DIR from .env" in w]
    without, _ = load_settings(environ={"MONGODB_URI": "mongodb://h/", **environ})  # not simulated: as before
    assert without.log_dir == str(tmp_path / "real_logs")
    # The shipped .env.example copied as is: its places are the defaults, nothing to say.
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    _, warnings = load_settings(overrides={"simulation": True}, environ={})
    assert not [w for w in warnings if "--simulation" in w]


@pytest.mark.parametrize(
    "line",
    [
        "LOG_DIR=my logs # comment",
        "RESUME_TOKEN_FILE=tok en.json",
        "ORDERS_COLLECTION=my orders",  # a number: told how it is written (below)
        "ARCHIVE_PII_KEY=s3cr3t\tkey",
    ],
)
def test_an_unquoted_value_with_a_space_is_refused_by_its_line_before_anything_is_written(
    line, tmp_path, monkeypatch, capsys
):
    """A new user's try: ``LOG_DIR=my logs # comment`` exited 0 and made a folder named "my
    logs" (python-dotenv cuts the comment at " #", keeps the rest); the docs said such a line is
    refused by its number, exit 2. One line naming the line and the fix, never its text; a quoted
    value with spaces means what it says."""
    from tests.helpers import run_in_process

    (tmp_path / ".env").write_text(f"# settings\nMONGODB_URI=mongodb://h/\n{line}\n")
    (tmp_path / ".env").chmod(0o600)
    result = run_in_process(
        "batch", "--simulation", env={}, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode == 2
    key = line.split("=", 1)[0]
    assert result.stderr.strip().splitlines() == [
        f'error: .env line 3: {key} has a space in its value, unquoted: put it in quotes ("my value"); '
        'a comment after a value starts at " #"'
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == [".env"]  # no "my logs", no logs
    # Quoted, a value with spaces means what it says; a comment after the closing quote is one.
    (tmp_path / ".env").write_text(
        'MONGODB_URI=mongodb://h/\nLOG_DIR="my logs" # a comment after a quoted value\n'
        "RESUME_TOKEN_FILE='tok en.json'\n  BATCH_SIZE=  50  \nexport LOG_LEVEL=DEBUG\n# BATCH_SIZE=1 2\n"
    )
    settings, _ = load_settings(environ={})
    assert (settings.log_dir, settings.resume_token_file) == ("my logs", "tok en.json")
    assert (settings.batch_size, settings.log_level) == (50, "DEBUG")
    # A comment after an unquoted value without spaces (the docs' own .env examples had such
    # lines), or alone after the =: read as written, as before the check (a review).
    (tmp_path / ".env").write_text(
        "MONGODB_URI=mongodb://h/\nBATCH_SIZE=500      # bigger chunks\nARCHIVE_PII_KEY= # none\n"
    )
    settings, _ = load_settings(environ={})
    assert (settings.batch_size, settings.archive_pii_key) == (500, None)  # empty: unset


def space_refused_then_written_so(line, written, tmp_path, monkeypatch, capsys):
    """``line`` in a .env: batch's error lines (exit 2 asserted); then the setting ``written``
    as the error advised, loaded: (the setting's name, the error lines, the settings)."""
    from tests.helpers import run_in_process

    (tmp_path / ".env").write_text(f"MONGODB_URI=mongodb://h/\n{line}\n")
    (tmp_path / ".env").chmod(0o600)
    result = run_in_process(
        "batch", "--simulation", env={}, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode == 2
    key = line.split("=", 1)[0]
    (tmp_path / ".env").write_text(f"MONGODB_URI=mongodb://h/\n{key}={written}\n")
    settings, _ = load_settings(environ={})
    return key, result.stderr.strip().splitlines(), settings


@pytest.mark.parametrize(
    ("line", "example"),
    [
        ("RESTORE_HOLD=30 days", "30d"),
        ("PURGE_AFTER=2 hours   # after delivery", "2h"),
        ("ARCHIVE_RETENTION=ten years", "30d"),
        ("BATCH_MAX_LAG=90 s", "90s"),
    ],
)
def test_a_duration_with_a_space_is_told_the_duration_format_not_to_quote_it(
    line, example, tmp_path, monkeypatch, capsys
):
    """A new user's try: ``RESTORE_HOLD=30 days`` was told "put it in quotes"; quoted, it was
    refused as no duration. A duration setting's line names the format (with the value as a
    duration is written, when it reads as one), and that value is then accepted."""
    key, said, settings = space_refused_then_written_so(line, example, tmp_path, monkeypatch, capsys)
    assert said == [
        f"error: .env line 2: {key} has a space in its value, unquoted: a duration is written "
        f"without spaces, e.g. {example} (s, m, h or d after a whole number)"
    ]
    assert getattr(settings, ENV_VARS[key][0]).total_seconds() > 0


@pytest.mark.parametrize(
    ("line", "example"),
    [("BATCH_SIZE=50 more", "50"), ("WATCH_HEARTBEAT_S=30 s", "30"), ("BATCH_MAX_RATE=a lot", "500")],
)
def test_a_number_with_a_space_is_told_to_be_written_alone_not_to_quote_it(
    line, example, tmp_path, monkeypatch, capsys
):
    """As a duration's: ``BATCH_SIZE=50 more`` was told "put it in quotes", and quoted it was
    refused as no number (a new user's try). A number setting's line says how it is written."""
    key, said, settings = space_refused_then_written_so(line, example, tmp_path, monkeypatch, capsys)
    assert said == [
        f"error: .env line 2: {key} has a space in its value, unquoted: a number is written alone, "
        f"without spaces, e.g. {example}"
    ]
    assert getattr(settings, ENV_VARS[key][0]) == int(example)


def test_a_missing_uri_names_the_env_file_it_looked_for_and_whether_it_exists(tmp_path, monkeypatch, capsys):
    """A new user's try, run from the wrong folder: "MONGODB_URI is not set: put it in the
    environment or .env" (which .env? there was none there). The line names the folder where
    no .env was, or the file without the setting, by absolute path, and the way to name one."""
    from tests.helpers import run_in_process

    wrong = tmp_path / "wrongdir"
    wrong.mkdir()
    result = run_in_process("batch", env={}, cwd=wrong, monkeypatch=monkeypatch, capsys=capsys)
    assert (result.returncode, result.stderr.strip().splitlines()) == (
        2,
        [
            f"error: MONGODB_URI is not set: not in the environment, and no .env in {wrong} (run from the "
            "project's folder, or name the settings file: --env-file PATH; see .env.example), or use --simulation"
        ],
    )
    (wrong / ".env").write_text("BATCH_SIZE=50\n")
    (wrong / ".env").chmod(0o600)
    result = run_in_process("batch", env={}, cwd=wrong, monkeypatch=monkeypatch, capsys=capsys)
    assert (
        f"MONGODB_URI is not set: not in the environment nor in {wrong / '.env'} (add it there"
        in result.stderr
    )
    result = run_in_process(
        "batch", "--env-file", ".env", env={}, cwd=wrong, monkeypatch=monkeypatch, capsys=capsys
    )
    assert f"nor in --env-file {wrong / '.env'} (add it there; see .env.example)" in result.stderr


def test_the_archive_uri_can_come_from_a_mounted_file(tmp_path):
    """The archive's own deployment (ARCHIVE_MONGODB_URI) from a file too, as MONGODB_URI_FILE:
    a separate archive's password need not sit in the shared settings file nor in the pod's
    environment. The same checks: one of the two, errors name the file only; --archive-uri
    (a flag) overrides it as it overrides the variable."""
    secret = tmp_path / "archive-uri"
    secret.write_text("mongodb://archive:Arch1ve-S3cret@archive.example:27017/?authSource=admin\n")
    base = {"MONGODB_URI": "mongodb://h/"}
    settings, warnings = load_settings(None, environ={**base, "ARCHIVE_MONGODB_URI_FILE": str(secret)})
    assert (
        settings.archive_mongodb_uri
        == "mongodb://archive:Arch1ve-S3cret@archive.example:27017/?authSource=admin"
    )
    assert not [w for w in warnings if "ARCHIVE_MONGODB_URI_FILE" in w]
    with pytest.raises(ConfigError, match="ARCHIVE_MONGODB_URI and ARCHIVE_MONGODB_URI_FILE are both set"):
        load_settings(
            None,
            environ={**base, "ARCHIVE_MONGODB_URI_FILE": str(secret), "ARCHIVE_MONGODB_URI": "mongodb://a/"},
        )
    with pytest.raises(ConfigError, match="ARCHIVE_MONGODB_URI_FILE: no such file"):
        load_settings(None, environ={**base, "ARCHIVE_MONGODB_URI_FILE": str(tmp_path / "missing")})
    flagged, _ = load_settings(
        None,
        {"archive_mongodb_uri": "mongodb://flag.example/"},
        environ={**base, "ARCHIVE_MONGODB_URI_FILE": str(secret)},
    )
    assert flagged.archive_mongodb_uri == "mongodb://flag.example/"
    secret.write_text("mongodb://archive:Arch1ve-S3cret@a.example/\nmongodb://other/\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(None, environ={**base, "ARCHIVE_MONGODB_URI_FILE": str(secret)})
    assert str(refused.value) == (
        f"ARCHIVE_MONGODB_URI_FILE {secret}: 2 lines; the connection string alone, on one line"
    )
    assert "Arch1ve-S3cret" not in str(refused.value)


def test_a_settings_files_aws_variables_are_the_sdks_where_the_environment_lacks_them(tmp_path, monkeypatch):
    """The cold tier's S3 settings in a settings file (AWS_ENDPOINT_URL and the keys beside
    MONGODB_URI) were "not a setting, ignored". Each is handed to the SDK, which reads the
    process environment, unless the environment has it (the environment wins); a simulation
    takes none (a settings file names a deployment's storage); its values are never shown."""
    from order_archiver.settings import hand_aws_settings_to_the_sdk

    env_file = tmp_path / "custom.env"
    env_file.write_text(
        "MONGODB_URI=mongodb://localhost:27017\nAWS_ENDPOINT_URL=http://127.0.0.1:9000\n"
        "AWS_SECRET_ACCESS_KEY=from-the-file\nAWS_REGION=eu-west-3\n"
    )
    env_file.chmod(0o600)
    settings, warnings = load_settings(str(env_file), environ={"AWS_REGION": "us-east-1"})
    assert warnings == []
    assert dict(settings.aws_sdk_from_file) == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_SECRET_ACCESS_KEY": "from-the-file",
    }
    assert "from-the-file" not in repr(settings)
    for name in ("AWS_ENDPOINT_URL", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-environments")
    hand_aws_settings_to_the_sdk(settings)
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "the-environments"
    simulated, _ = load_settings(str(env_file), overrides={"simulation": True}, environ={})
    assert simulated.aws_sdk_from_file == ()
