"""The app env: .env.sample, overrides, abra.sh, COMPOSE_FILE, secrets, version labels."""

from __future__ import annotations

import os
import string

import pytest
import yaml

from ansible_collections.coopcloud.ci.plugins.module_utils._appenv import (
    AppEnvError,
    SecretSpec,
    build_app_env,
    compose_files_from,
    generate_secret,
    parse_abra_sh,
    parse_env,
    parse_secrets,
    parse_type_line,
    secret_name,
    secret_values,
    version_from_labels,
    version_label,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import ValidationError
from ansible_collections.coopcloud.ci.plugins.module_utils._version import Version

# --- parse_env --------------------------------------------------------------------------


def test_plain_quoted_exported_and_comment_lines():
    env = parse_env(
        "# a comment\n"
        "\n"
        "A=1\n"
        "export B=two\n"
        "C='single $A quoted'\n"
        'D="double $A quoted"\n'
        "E=unquoted  # trailing comment\n"
        'F="has # inside"  # and a comment\n'
        "G=a#b\n"
        "H=\n"
        "  I=indented\n"
    )
    assert env == {
        "A": "1",
        "B": "two",
        "C": "single $A quoted",
        "D": "double 1 quoted",
        "E": "unquoted",
        "F": "has # inside",
        "G": "a#b",
        "H": "",
        "I": "indented",
    }


def test_compose_file_extends_itself_quoted():
    text = (
        'COMPOSE_FILE="compose.yml"\n'
        'COMPOSE_FILE="$COMPOSE_FILE:compose.smtp.yml"\n'
        'COMPOSE_FILE="${COMPOSE_FILE}:postgres/compose.postgres.tune.yml"\n'
    )
    assert (
        parse_env(text)["COMPOSE_FILE"]
        == "compose.yml:compose.smtp.yml:postgres/compose.postgres.tune.yml"
    )


def test_compose_file_extends_itself_unquoted():
    text = "COMPOSE_FILE=compose.yml\nCOMPOSE_FILE=$COMPOSE_FILE:compose.x.yml\n"
    assert parse_env(text)["COMPOSE_FILE"] == "compose.yml:compose.x.yml"


def test_commented_compose_file_is_not_active():
    text = (
        'COMPOSE_FILE="compose.yml"\n'
        '#COMPOSE_FILE="$COMPOSE_FILE:compose.ci.yml"\n'
        '# COMPOSE_FILE="$COMPOSE_FILE:compose.other.yml"\n'
    )
    assert parse_env(text)["COMPOSE_FILE"] == "compose.yml"


def test_compose_file_extends_a_base_value():
    text = 'COMPOSE_FILE="$COMPOSE_FILE:compose.ci.yml"\n'
    env = parse_env(text, {"COMPOSE_FILE": "compose.yml", "OTHER": "kept"})
    assert env == {"COMPOSE_FILE": "compose.yml:compose.ci.yml", "OTHER": "kept"}


def test_unknown_variables_expand_to_empty_and_defaults_apply():
    env = parse_env(
        "A=x${NOPE}y$NOPE\n"
        "B=${NOPE:-fallback}\n"
        "C=${A:-unused}\n"
        "EMPTY=\n"
        "D=${EMPTY:-colon}\n"
        "E=${EMPTY-dash}\n"
        "F=${NOPE:-$A}\n"
        "G=cost: 5$\n"
    )
    assert env["A"] == "xy"
    assert env["B"] == "fallback"
    assert env["C"] == "xy"
    assert env["D"] == "colon"
    assert env["E"] == ""
    assert env["F"] == "xy"
    assert env["G"] == "cost: 5$"


def test_escapes_in_double_quotes_and_unquoted():
    env = parse_env('A="say \\"hi\\" \\$HOME \\\\"\nB=a\\ b\n')
    assert env["A"] == 'say "hi" $HOME \\'
    assert env["B"] == "a b"


def test_fixed_keys_win_over_assignments_and_expand():
    env = parse_env(
        "DOMAIN=sample.example.com\nURL=https://$DOMAIN/\n", fixed={"DOMAIN": "real.example.org"}
    )
    assert env == {"DOMAIN": "real.example.org", "URL": "https://real.example.org/"}


@pytest.mark.parametrize(
    "text, words",
    [
        ('A="unterminated\n', "double quote"),
        ("A='unterminated\n", "single quote"),
        ("A=${B\n", "not closed"),
        ("A=${B?err}\n", "unsupported substitution"),
        ("just words\n", "line 1 is not an assignment"),
        ("OK=1\n1BAD=2\n", "line 2"),
    ],
)
def test_malformed_lines_fail_naming_the_line(text, words):
    with pytest.raises(AppEnvError, match=words):
        parse_env(text)


# --- abra.sh ----------------------------------------------------------------------------


def test_abra_sh_exports_only():
    text = (
        "#!/usr/bin/env bash\n"
        "export APP_ENTRYPOINT_VERSION=v4\n"
        'export NGINX_CONF_VERSION="v2"\n'
        "export PG_BACKUP_VERSION='v1'  # bump on change\n"
        "NOT_EXPORTED=1\n"
        "\n"
        "environment() {\n"
        "  export INSIDE_FUNCTION=yes\n"
        '  echo "$APP_ENTRYPOINT_VERSION"\n'
        "}\n"
        "# export COMMENTED=1\n"
        "export LITERAL=$HOME\n"
    )
    assert parse_abra_sh(text) == {
        "APP_ENTRYPOINT_VERSION": "v4",
        "NGINX_CONF_VERSION": "v2",
        "PG_BACKUP_VERSION": "v1",
        "LITERAL": "$HOME",
    }


# --- TYPE line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("TYPE=custom-html\nDOMAIN=x.example.com\n", ("custom-html", None)),
        ("TYPE=custom-html:1.1.0+1.29\n", ("custom-html", "1.1.0+1.29")),
        ("RECIPE=notes\n", ("notes", None)),
        ("RECIPE=notes:2.0.1+1.0.6-social-amd64\n", ("notes", "2.0.1+1.0.6-social-amd64")),
        ('\n# made by abra\nTYPE="gitea:v2.4.8"\n', ("gitea", "v2.4.8")),
        ("export TYPE=nextcloud  # the recipe\n", ("nextcloud", None)),
    ],
)
def test_type_line_forms(text, expected):
    assert parse_type_line(text) == expected


@pytest.mark.parametrize(
    "text, words",
    [
        ("DOMAIN=x.example.com\nTYPE=custom-html\n", "first line must be TYPE="),
        ("TYPE=Not_A_Recipe\n", "recipe name"),
        ("TYPE=notes:1.0 0\n", "invalid version"),
        ("TYPE=notes:\n", "invalid version"),
        ("\n# nothing\n", "empty"),
    ],
)
def test_type_line_errors(text, words):
    with pytest.raises(ValueError, match=words):
        parse_type_line(text)


# --- secrets ----------------------------------------------------------------------------

SAMPLE_SECRETS = """\
TYPE=thing
SECRET_DB_PASSWORD_VERSION=v1  # length=128 charset=hex
SECRET_API_KEY_VERSION=v2
SECRET_ADMIN_PASS_VERSION=v1 # charset=special length=20
SECRET_SMTP_PASSWORD_VERSION=v1  # generate=false
#SECRET_S3_KEY_VERSION=v1  # length=40 generate=false
OTHER=1
"""


def test_parse_secrets_modifiers_and_defaults():
    specs = {s.name: s for s in parse_secrets(SAMPLE_SECRETS)}
    assert list(specs) == ["db_password", "api_key", "admin_pass", "smtp_password"]
    assert specs["db_password"] == SecretSpec("db_password", "v1", 128, "hex", True)
    assert specs["api_key"] == SecretSpec("api_key", "v2", 32, "alnum", True)
    assert specs["admin_pass"] == SecretSpec("admin_pass", "v1", 20, "special", True)
    assert specs["smtp_password"].generate is False
    assert specs["db_password"].env_key == "SECRET_DB_PASSWORD_VERSION"


def test_parse_secrets_app_env_bumps_and_enables():
    env = {"SECRET_DB_PASSWORD_VERSION": "v3", "SECRET_S3_KEY_VERSION": "v1"}
    specs = {s.name: s for s in parse_secrets(SAMPLE_SECRETS, env)}
    assert specs["db_password"] == SecretSpec("db_password", "v3", 128, "hex", True)
    # enabled in the app env: modifiers still come from the commented sample line
    assert specs["s3_key"] == SecretSpec("s3_key", "v1", 40, "alnum", False)


@pytest.mark.parametrize(
    "line, words",
    [
        ("SECRET_X_VERSION=v1 # charset=emoji", "charset='emoji'"),
        ("SECRET_X_VERSION=v1 # length=abc", "length='abc'"),
        ("SECRET_X_VERSION=v1 # length=0", "length='0'"),
        ("SECRET_X_VERSION=", "has no version"),
    ],
)
def test_parse_secrets_bad_modifiers(line, words):
    with pytest.raises(AppEnvError, match=words):
        parse_secrets(line + "\n")


@pytest.mark.parametrize(
    "charset, alphabet",
    [
        ("hex", set("0123456789abcdef")),
        ("alnum", set(string.ascii_letters + string.digits)),
        ("default", set(string.ascii_letters + string.digits)),
        ("special", set(string.ascii_letters + string.digits + string.punctuation)),
    ],
)
def test_generate_secret_exact_length_and_charset(charset, alphabet):
    spec = SecretSpec("x", "v1", 200, charset, True)
    values = [generate_secret(spec) for _ in range(5)]
    for value in values:
        assert len(value) == 200
        assert set(value) <= alphabet
    assert len(set(values)) == 5  # random, not constant
    if charset == "special":
        assert set("".join(values)) & set(string.punctuation)


def test_secret_name_and_docker_limit():
    spec = SecretSpec("db_password", "v1")
    assert secret_name("notes_example_com", spec) == "notes_example_com_db_password_v1"
    with pytest.raises(ValidationError, match="64"):
        secret_name("a" * 50, SecretSpec("db_password", "v1"))
    with pytest.raises(ValidationError, match="invalid"):
        secret_name("stack", SecretSpec("db password", "v1"))


def test_secret_values_generate_provide_skip_existing():
    specs = parse_secrets(SAMPLE_SECRETS)
    stack = "thing_example_com"
    values = secret_values(
        stack,
        specs,
        provided={"smtp_password": "given-by-caller"},
        existing=["thing_example_com_api_key_v2"],
    )
    assert set(values) == {
        "thing_example_com_db_password_v1",
        "thing_example_com_admin_pass_v1",
        "thing_example_com_smtp_password_v1",
    }
    assert values["thing_example_com_smtp_password_v1"] == "given-by-caller"
    assert len(values["thing_example_com_db_password_v1"]) == 128
    assert set(values["thing_example_com_db_password_v1"]) <= set("0123456789abcdef")


def test_secret_values_missing_required_named_in_one_error():
    specs = parse_secrets(SAMPLE_SECRETS, {"SECRET_S3_KEY_VERSION": "v1"})
    with pytest.raises(AppEnvError) as info:
        secret_values("thing_example_com", specs)
    message = str(info.value)
    assert "smtp_password (thing_example_com_smtp_password_v1)" in message
    assert "s3_key (thing_example_com_s3_key_v1)" in message
    assert "db_password" not in message
    # already on the swarm: nothing is missing
    assert secret_values(
        "thing_example_com",
        specs,
        existing=["thing_example_com_smtp_password_v1", "thing_example_com_s3_key_v1"],
    ).keys() == {
        "thing_example_com_db_password_v1",
        "thing_example_com_api_key_v2",
        "thing_example_com_admin_pass_v1",
    }


# --- compose files ----------------------------------------------------------------------


def _touch(root, rel, text="services: {}\n"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_compose_files_default_and_subfolder_overlays(tmp_path):
    _touch(tmp_path, "compose.yml")
    _touch(tmp_path, "postgres/compose.postgres.tune.yml")
    assert compose_files_from({}, str(tmp_path)) == ["compose.yml"]
    env = {"COMPOSE_FILE": "compose.yml:postgres/compose.postgres.tune.yml:"}
    assert compose_files_from(env, str(tmp_path)) == [
        "compose.yml",
        "postgres/compose.postgres.tune.yml",
    ]


def test_compose_files_refused(tmp_path):
    _touch(tmp_path, "recipe/compose.yml")
    _touch(tmp_path, "outside.yml")
    root = tmp_path / "recipe"
    os.symlink(tmp_path / "outside.yml", root / "compose.link.yml")
    cases = {
        "compose.yml:compose.missing.yml": "'compose.missing.yml', which does not exist",
        "/etc/passwd": "relative paths",
        "compose.yml:../outside.yml": "relative paths",
        "compose.yml:compose.link.yml": "leads outside the recipe",
    }
    for value, words in cases.items():
        with pytest.raises(AppEnvError, match=words):
            compose_files_from({"COMPOSE_FILE": value}, str(root))


# --- version labels ---------------------------------------------------------------------


def _compose(services):
    return {"version": "3.8", "services": services}


def test_version_label_new_form_on_app():
    compose = yaml.safe_load(
        """
services:
  app:
    deploy:
      labels:
        - "traefik.enable=true"
        - "coop-cloud.${STACK_NAME}.version=1.11.0+1.29.0"
"""
    )
    label = version_label(compose)
    assert (label.service, label.form, label.version, label.digest) == (
        "app",
        "new",
        "1.11.0+1.29.0",
        None,
    )


def test_version_label_with_suffixed_app_version_parses():
    compose = _compose(
        {
            "app": {
                "deploy": {
                    "labels": {"coop-cloud.${STACK_NAME}.version": "2.0.1+1.0.6-social-amd64"}
                }
            }
        }
    )
    label = version_label(compose)
    assert label.version == "2.0.1+1.0.6-social-amd64"
    version = Version.parse(label.version)
    assert version.recipe == (2, 0, 1) and version.app_numbers == (1, 0, 6)


def test_version_label_old_per_service_form_with_digest():
    compose = _compose(
        {
            "app": {"deploy": {"labels": ["coop-cloud.${STACK_NAME}.app.version=5.4.2-74b6e5fa"]}},
            "db": {"image": "postgres:13"},
        }
    )
    label = version_label(compose)
    assert (label.service, label.form, label.version, label.digest) == (
        "app",
        "old",
        "5.4.2",
        "74b6e5fa",
    )


def test_version_label_empty_or_on_another_service():
    compose = _compose(
        {
            "app": {"deploy": {"labels": ["coop-cloud.${STACK_NAME}.version="]}},
            "web": {"deploy": {"labels": ["coop-cloud.${STACK_NAME}.version=0.3.0+v1.2"]}},
        }
    )
    label = version_label(compose)
    assert (label.service, label.version) == ("web", "0.3.0+v1.2")
    assert version_label(_compose({"app": {"image": "x"}, "db": None})) is None
    assert version_label({"services": {"app": {"deploy": {"labels": [""]}}}}) is None


def test_version_label_new_form_beats_old_and_later_files_override():
    base = _compose(
        {
            "app": {"deploy": {"labels": ["coop-cloud.${STACK_NAME}.app.version=1.0-0123abcd"]}},
            "worker": {"deploy": {"labels": {"coop-cloud.${STACK_NAME}.version": "1.0.0+1"}}},
        }
    )
    overlay = _compose(
        {"worker": {"deploy": {"labels": {"coop-cloud.${STACK_NAME}.version": "1.0.1+1"}}}}
    )
    label = version_label([base, overlay])
    assert (label.service, label.form, label.version) == ("worker", "new", "1.0.1+1")


def test_version_from_deployed_service_labels():
    labels = {
        "com.docker.stack.namespace": "notes_example_com",
        "coop-cloud.notes_example_com.version": "1.1.0+2.1",
        "coop-cloud.other_stack.version": "9.9.9+9",
    }
    assert version_from_labels(labels, "notes_example_com").version == "1.1.0+2.1"
    assert version_from_labels(labels, "notes_example_org") is None
    old = {"coop-cloud.s_example_com.app.version": "v2.4.8-deadbeef"}
    label = version_from_labels(old, "s_example_com")
    assert (label.version, label.digest, label.form) == ("v2.4.8", "deadbeef", "old")


# --- build_app_env on the example recipes and on a messy one ----------------------------


def test_build_app_env_notes_example(examples):
    notes = examples["notes"]
    app = build_app_env(notes["path"], "notes-ab12cd.ci.example.org")
    assert app.stack == "notes-ab12cd_ci_example_org"
    assert app.env["DOMAIN"] == "notes-ab12cd.ci.example.org"
    assert app.env["STACK_NAME"] == "notes-ab12cd_ci_example_org"
    assert app.env["TYPE"] == "notes" and app.recipe == "notes"
    assert app.env["NOTES_TITLE"] == "Our notes"
    assert app.env["DB_ENTRYPOINT_VERSION"] == "v2"  # from abra.sh
    assert app.compose_files == ["compose.yml", "db/compose.db-tune.yml"]
    assert app.compose_paths() == [
        os.path.join(notes["path"], "compose.yml"),
        os.path.join(notes["path"], "db/compose.db-tune.yml"),
    ]
    assert app.secrets == [SecretSpec("db_password", "v1", 32, "hex", True)]
    assert app.secret_names() == {"db_password": "notes-ab12cd_ci_example_org_db_password_v1"}
    with open(app.compose_paths()[0]) as handle:
        compose = yaml.safe_load(handle)
    assert version_label(compose, app.stack).version == notes["latest"]


def test_build_app_env_custom_html_overlay_through_overrides(examples):
    html = examples["custom-html"]
    app = build_app_env(
        html["path"],
        "html.example.org",
        overrides='COMPOSE_FILE="$COMPOSE_FILE:compose.ci.yml"\nCI_HTTP_PORT=8081\n',
    )
    assert app.compose_files == ["compose.yml", "compose.ci.yml"]
    assert app.env["CI_HTTP_PORT"] == "8081"
    assert app.env["ENTRYPOINT_VERSION"] == "v1"
    assert app.secrets == []


MESSY_SAMPLE = """\
TYPE=messy

DOMAIN=messy.example.com
## COMPOSE_FILE="$COMPOSE_FILE:compose.never.yml"
COMPOSE_FILE=compose.yml
COMPOSE_FILE="$COMPOSE_FILE:compose.smtp.yml"
COMPOSE_FILE=$COMPOSE_FILE:postgres/compose.postgres.tune.yml
APP_ENTRYPOINT_VERSION=v1
URL=https://${DOMAIN}/login
SECRET_DB_PASSWORD_VERSION=v1  # length=64 charset=hex
SECRET_SMTP_PASSWORD_VERSION=v1  # generate=false
"""

MESSY_ABRA_SH = """\
export APP_ENTRYPOINT_VERSION=v4
export PG_TUNE_VERSION="v2"

abra_backup() {
  export APP_ENTRYPOINT_VERSION=v99
}
"""

MESSY_COMPOSE = """\
services:
  app:
    image: ccci/web:1.29
    configs:
      - source: entrypoint
        target: /entrypoint.sh
    deploy:
      labels:
        - "coop-cloud.${STACK_NAME}.version="
configs:
  entrypoint:
    name: ${STACK_NAME}_entrypoint_${APP_ENTRYPOINT_VERSION:-v0}
    file: entrypoint.sh
secrets:
  db_password:
    external: true
    name: ${STACK_NAME}_db_password_${SECRET_DB_PASSWORD_VERSION}
"""
MESSY_SMTP = """\
secrets:
  smtp_password:
    external: true
    name: ${STACK_NAME}_smtp_password_${SECRET_SMTP_PASSWORD_VERSION:-v1}
"""


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "messy"
    files = {
        ".env.sample": MESSY_SAMPLE,
        "abra.sh": MESSY_ABRA_SH,
        "compose.yml": MESSY_COMPOSE,
        "compose.smtp.yml": MESSY_SMTP,
        "postgres/compose.postgres.tune.yml": "services: {}\n",
        "entrypoint.sh": "#!/bin/sh\n",
    }
    for rel, text in files.items():
        _touch(root, rel, text)
    return root


def test_build_app_env_takes_no_secret_compose_files_do_not_declare(messy):
    """As abra (the traefik recipe, its OVH secret versions set in the app env while its
    COMPOSE_FILE leaves the OVH overlay out): no compose file declares a secret, so none
    is created, whatever SECRET_*_VERSION lines the sample and the env have."""
    (messy / "compose.yml").write_text(MESSY_COMPOSE.split("secrets:")[0])
    env = {"COMPOSE_FILE": "compose.yml", "SECRET_OVH_APP_SECRET_VERSION": "v1"}
    app = build_app_env(str(messy), "messy.example.org", env)
    assert app.compose_files == ["compose.yml"]
    assert app.secrets == [] and app.secret_names() == {} and app.secret_values() == {}


def test_build_app_env_order_sample_overrides_abra_sh(messy):
    app = build_app_env(
        str(messy),
        "messy-1.ci.example.org",
        overrides={
            "APP_ENTRYPOINT_VERSION": "v2",  # abra.sh still wins, as in abra
            "EXTRA": "from caller",
            "DOMAIN": "ignored.example.com",  # DOMAIN always follows the domain
            "SECRET_DB_PASSWORD_VERSION": "v5",
        },
    )
    assert app.env["APP_ENTRYPOINT_VERSION"] == "v4"
    assert app.env["PG_TUNE_VERSION"] == "v2"
    assert app.env["EXTRA"] == "from caller"
    assert app.env["DOMAIN"] == "messy-1.ci.example.org"
    assert app.env["URL"] == "https://messy-1.ci.example.org/login"
    assert app.compose_files == [
        "compose.yml",
        "compose.smtp.yml",
        "postgres/compose.postgres.tune.yml",
    ]
    assert [(s.name, s.version, s.length, s.charset, s.generate) for s in app.secrets] == [
        ("db_password", "v5", 64, "hex", True),
        ("smtp_password", "v1", 32, "alnum", False),
    ]
    with pytest.raises(AppEnvError, match="smtp_password"):
        app.secret_values()
    values = app.secret_values(provided={"smtp_password": "s3cret"})
    assert values["messy-1_ci_example_org_smtp_password_v1"] == "s3cret"
    assert len(values["messy-1_ci_example_org_db_password_v5"]) == 64
    # the empty label is skipped; compose has no other version label
    assert version_label(yaml.safe_load(MESSY_COMPOSE), app.stack) is None


def test_build_app_env_abra_sh_export_overrides_compose_default(messy):
    """``${APP_ENTRYPOINT_VERSION:-v0}`` in compose must see abra.sh's v4, not v0."""
    app = build_app_env(str(messy), "messy.example.org")
    config_name = yaml.safe_load(MESSY_COMPOSE)["configs"]["entrypoint"]["name"]
    rendered = parse_env(f"NAME={config_name}\n", app.env)["NAME"]
    assert rendered == "messy_example_org_entrypoint_v4"


def test_build_app_env_missing_overlay_named(messy):
    (messy / "compose.smtp.yml").unlink()
    with pytest.raises(AppEnvError, match=r"'compose\.smtp\.yml', which does not exist"):
        build_app_env(str(messy), "messy.example.org")


def test_build_app_env_needs_env_sample_and_valid_domain(tmp_path, messy):
    _touch(tmp_path, "bare/compose.yml")
    with pytest.raises(AppEnvError, match=r"has no \.env\.sample"):
        build_app_env(str(tmp_path / "bare"), "bare.example.org")
    with pytest.raises(ValidationError):
        build_app_env(str(messy), "Not A Domain")
    long_domain = "a-very-long-app-name-for-the-ci.runs.example.org"
    with pytest.raises(ValidationError, match="Docker allows 64"):
        build_app_env(str(messy), long_domain)
    with pytest.raises(AppEnvError, match="not a valid variable name"):
        build_app_env(str(messy), "messy.example.org", overrides={"BAD-KEY": "x"})


def test_secrets_come_from_the_active_compose_files_as_abra_takes_them(tmp_path):
    (tmp_path / ".env.sample").write_text(
        "TYPE=r\n"
        "SECRET_DB_PASSWORD_VERSION=v1 # length=20\n"
        "#SECRET_ADMIN_PASSWORD_VERSION=v1 # length=48 charset=hex\n"
        "#SECRET_SMTP_PASSWORD_VERSION=v1 # generate=false\n"
        "SECRET_OLD_UNUSED_VERSION=v1\n"
    )
    (tmp_path / "compose.yml").write_text(
        "services: {app: {image: x, secrets: [db_password, admin_password]}}\n"
        "secrets:\n"
        "  db_password: {external: true, name: '${STACK_NAME}_db_password_${SECRET_DB_PASSWORD_VERSION}'}\n"
        "  admin_password: {external: true, name: '${STACK_NAME}_admin_password_${SECRET_ADMIN_PASSWORD_VERSION:-v2}'}\n"
        "  tls_cert: {file: ./cert.pem}\n"
    )
    (tmp_path / "compose.smtp.yml").write_text(
        "services: {app: {secrets: [smtp_password, s3_key]}}\n"
        "secrets:\n"
        "  smtp_password: {external: true, name: '${STACK_NAME}_smtp_pass_${SECRET_SMTP_PASSWORD_VERSION}'}\n"
        "  s3_key: {external: true, name: '${STACK_NAME}_s3_key_${SECRET_S3_KEY}'}\n"
    )
    env = {"COMPOSE_FILE": "compose.yml:compose.smtp.yml", "SECRET_SMTP_PASSWORD_VERSION": "v3",
           "SECRET_S3_KEY": "v7"}  # fmt: skip
    app = build_app_env(str(tmp_path), "a.ccci.test", env)
    specs = {s.name: s for s in app.secrets}
    # .env.sample's unused secret is not created; the file-backed one is stack deploy's
    assert sorted(specs) == ["admin_password", "db_password", "s3_key", "smtp_password"]
    assert app.secret_names() == {
        "db_password": "a_ccci_test_db_password_v1",
        "admin_password": "a_ccci_test_admin_password_v2",  # the compose default
        "smtp_password": "a_ccci_test_smtp_pass_v3",  # named unlike its env variable
        "s3_key": "a_ccci_test_s3_key_v7",  # ${SECRET_S3_KEY}, no _VERSION variable
    }
    assert (specs["db_password"].length, specs["admin_password"].length) == (20, 48)
    assert specs["admin_password"].charset == "hex"
    assert specs["smtp_password"].generate is False
    with pytest.raises(AppEnvError, match="generate=false"):
        app.secret_values({})
    assert set(app.secret_values({"smtp_password": "x"})) == set(app.secret_names().values())
    # a version that interpolates to nothing is refused with the variable to set
    env.pop("SECRET_S3_KEY")
    with pytest.raises(AppEnvError, match="compose secret 's3_key' has no version"):
        build_app_env(str(tmp_path), "a.ccci.test", env)


def test_version_label_is_interpolated_and_old_labels_of_other_services_ignored():
    compose = {"services": {
        "app": {"deploy": {"labels": ["coop-cloud.${STACK_NAME}.version=${COOP_CLOUD_VERSION:-2.6.0+1.21}"]}},
        "db": {"deploy": {"labels": ["coop-cloud.${STACK_NAME}.db.version=8.0"]}},
    }}  # fmt: skip
    assert version_label(compose, "s", env={}).version == "2.6.0+1.21"
    assert (
        version_label(compose, "s", env={"COOP_CLOUD_VERSION": "2.7.0+1.22"}).version
        == "2.7.0+1.22"
    )
    only_db = {"services": {"db": compose["services"]["db"]}}
    assert version_label(only_db, "s", env={}) is None
