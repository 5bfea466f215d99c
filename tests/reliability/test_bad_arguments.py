"""Bad arguments (issue 8, item 4): every error a user can cause ends with one clear line
naming the bad value, a non-zero exit, and no side effect.

Each case is one row: what is passed where, and the words the message must hold. Before
and after each case the test lists the world it could touch (tests/reliability/world.py):
the engine's stacks, services, containers, volumes, secrets, configs and networks whose
name holds the test's unique id, the whole state directory tree (type, mode, size, mtime,
content digest), the recipe checkouts, and sentinel paths that an injected command would
create. The two listings must be equal. Plays run through ansible-runner as Drone runs
them; module cases call the module's ``main()`` in this process (fast), except where the
real engine or a real Keycloak API (the test double) is the point.
"""

from __future__ import annotations

import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.ansible import dump, run_playbook
from support.fixtures import init_state

from reliability.world import World, differences

pytestmark = [pytest.mark.swarm]

SUFFIX = "ccci.test"
PLAY_WORKERS = 3
LONG = "a" * 200


def pwned(u: str) -> str:
    return f"/tmp/ccci-pwned-{u}"


# (case id, playbook, variables to override, words the message must hold)
# In variables and words, {u} is the test's unique id and {pwn} the sentinel path.
PLAY_CASES = [
    ("cold recipe with /", "cold.yml", {"recipe": "custom-html/../x"},
     "recipe name 'custom-html/../x' is invalid"),
    ("cold recipe ..", "cold.yml", {"recipe": ".."}, "recipe name '..' is invalid"),
    ("cold recipe with space", "cold.yml", {"recipe": "custom html"},
     "recipe name 'custom html' is invalid"),
    ("cold recipe capitals", "cold.yml", {"recipe": "Custom-HTML"},
     "recipe name 'Custom-HTML' is invalid"),
    ("cold recipe 200 chars", "cold.yml", {"recipe": LONG}, f"recipe name '{LONG}' is invalid"),
    ("cold recipe unknown", "cold.yml", {"recipe": "no-such-recipe"},
     "recipe 'no-such-recipe' has no checkout at"),
    ("cold ref unknown", "cold.yml", {"ref": "no-such-ref"},
     "ref 'no-such-ref' not found in recipe"),
    ("cold ref unknown commit", "cold.yml", {"ref": "deadbeefdeadbeef"},
     "ref 'deadbeefdeadbeef' not found in recipe"),
    ("cold ref --upload-pack", "cold.yml", {"ref": "--upload-pack=touch {pwn}"},
     "ref '--upload-pack=touch {pwn}' is invalid"),
    ("cold ref option no space", "cold.yml", {"ref": "--output={pwn}"},
     "ref '--output={pwn}' is invalid"),
    ("cold ref ;rm", "cold.yml", {"ref": ";rm -rf /"}, "ref ';rm -rf /' is invalid"),
    ("cold ref $(...)", "cold.yml", {"ref": "$(touch {pwn})"}, "ref '$(touch {pwn})' is invalid"),
    ("cold ref backticks", "cold.yml", {"ref": "`touch {pwn}`"},
     "ref '`touch {pwn}`' is invalid"),
    ("cold ref range", "cold.yml", {"ref": "1.0.0..broken"}, "ref '1.0.0..broken' is invalid"),
    ("cold suffix capitals", "cold.yml", {"ccci_domain_suffix": "CI.Example.ORG"},
     "domain 'cust-{u}.CI.Example.ORG' is invalid"),
    ("cold suffix underscore", "cold.yml", {"ccci_domain_suffix": "ci_example.org"},
     "domain 'cust-{u}.ci_example.org' is invalid"),
    ("cold suffix space", "cold.yml", {"ccci_domain_suffix": "ci example.org"},
     "domain 'cust-{u}.ci example.org' is invalid"),
    ("cold suffix too long", "cold.yml", {"ccci_domain_suffix": "x" * 60 + ".org"},
     "domain 'cust-{u}." + "x" * 60 + ".org' is too long"),
    ("cold suffix empty", "cold.yml", {"ccci_domain_suffix": ""}, "ccci_domain_suffix is required"),
    ("cold state dir relative", "cold.yml", {"ccci_state_dir": "state"},
     "state directory 'state' is relative"),
    ("cold state dir /", "cold.yml", {"ccci_state_dir": "/"}, "state directory '/' is refused"),
    ("cold state dir a file", "cold.yml", {"ccci_state_dir": "{file}"},
     "exists and is not a directory"),
    ("cold run id bad", "cold.yml", {"ccci_run_id": "../../x"}, "run id '../../x' is invalid"),
    ("cold driver unknown", "cold.yml", {"ccci_driver": "podman"},
     "value of ccci_driver must be one of: stack, abra, got: podman"),
    ("quick recipe with /", "quick.yml", {"recipe": "a/b"}, "recipe name 'a/b' is invalid"),
    ("quick ref injection", "quick.yml", {"ref": "--upload-pack=touch {pwn}"},
     "ref '--upload-pack=touch {pwn}' is invalid"),
    ("quick state dir relative", "quick.yml", {"ccci_state_dir": "state"},
     "state directory 'state' is relative"),
    ("quick recipe capitals", "quick.yml", {"recipe": "Custom-HTML"},
     "recipe name 'Custom-HTML' is invalid"),
    ("quick recipe 200 chars", "quick.yml", {"recipe": LONG}, f"recipe name '{LONG}' is invalid"),
    ("quick recipe ..", "quick.yml", {"recipe": ".."}, "recipe name '..' is invalid"),
    ("quick ref unknown", "quick.yml", {"ref": "no-such-ref"},
     "ref 'no-such-ref' not found in recipe"),
    ("quick ref ;rm", "quick.yml", {"ref": ";rm -rf /"}, "ref ';rm -rf /' is invalid"),
    ("quick ref $(...)", "quick.yml", {"ref": "$(touch {pwn})"},
     "ref '$(touch {pwn})' is invalid"),
    ("quick suffix capitals", "quick.yml", {"ccci_domain_suffix": "CI.Example.ORG"},
     "domain 'warm-custom-html.CI.Example.ORG' is invalid"),
    ("quick state dir /", "quick.yml", {"ccci_state_dir": "/"}, "state directory '/' is refused"),
    ("quick state dir a file", "quick.yml", {"ccci_state_dir": "{file}"},
     "exists and is not a directory"),
    ("quick run id bad", "quick.yml", {"ccci_run_id": "$(id)"}, "run id '$(id)' is invalid"),
    ("restore recipe ..", "restore.yml", {"recipe": "../x"}, "got ../x; nothing was touched"),
    ("restore recipe capitals", "restore.yml", {"recipe": "Notes"}, "got Notes"),
    ("restore state dir relative", "restore.yml", {"ccci_state_dir": "state"},
     "state directory 'state' is relative"),
]  # fmt: skip


def fill(value, **names):
    return value.format(**names) if isinstance(value, str) else value


def _play_case(case, playbook, more, words, examples_root, docker_client, base: Path) -> dict:
    """Run one bad play with the world listed before and after (one worker thread)."""
    unique = secrets.token_hex(3)
    state_dir = init_state(base / "state")
    a_file = base / "not-a-dir"
    a_file.write_text("keep me\n")
    names = {"u": unique, "pwn": pwned(unique), "file": str(a_file)}
    args = {
        "recipe": "custom-html",
        "ccci_recipes_dir": str(examples_root),
        "ccci_state_dir": str(state_dir),
        "ccci_domain_suffix": f"r{unique}.{SUFFIX}",
        "ccci_access": "published",
        "ccci_fetch": False,
        "ccci_run_id": unique,
    }
    args.update({k: fill(v, **names) for k, v in more.items()})
    world = World(
        docker_client,
        unique,
        roots=[state_dir, examples_root, a_file],
        sentinels=[Path(pwned(unique)), Path("/tmp/x"), Path("/runs"), Path("/custom-html"),
                   Path.cwd() / "state", Path(examples_root).parent / "x"],
    )  # fmt: skip
    before = world.take()
    private = base / "runner"
    private.mkdir()
    res = run_playbook(playbook, args, private_dir=private)
    after = world.take()
    return {"res": res, "unique": unique, "state_dir": state_dir, "words": fill(words, **names),
            "changed": differences(before, after)}  # fmt: skip


@pytest.fixture(scope="module")
def plays(examples, examples_root, docker_client, tmp_path_factory) -> dict[str, dict]:
    """Every play case, three at a time (each ansible-playbook start costs seconds)."""
    with ThreadPoolExecutor(max_workers=PLAY_WORKERS) as pool:
        futures = {
            case: pool.submit(_play_case, case, playbook, more, words, examples_root,
                              docker_client, tmp_path_factory.mktemp("play"))
            for case, playbook, more, words in PLAY_CASES
        }  # fmt: skip
        return {case: future.result() for case, future in futures.items()}


# one worker under pytest-xdist (--dist loadgroup): these share the module-scoped set-up
@pytest.mark.xdist_group("test_bad_arguments")
@pytest.mark.parametrize("case", [c for c, _, _, _ in PLAY_CASES])
def test_a_bad_play_variable_stops_with_one_line_and_changes_nothing(plays, case):
    out = plays[case]
    res, words, unique, state_dir = out["res"], out["words"], out["unique"], out["state_dir"]
    assert res.rc != 0, dump(res)
    failed = [t for t in res.tasks if t["event"] == "runner_on_failed"]
    assert failed, dump(res)
    msg = failed[-1]["res"].get("msg", "")
    assert words in msg, dump(res)
    _one_line(msg)
    # Stopped at the edge: nothing deployed or installed, and no wait, lock or restore done
    # (a module may refuse the bad value itself, as its first step: it then did nothing).
    assert not any(t["task"].startswith(("Deploy", "Install")) for t in res.tasks), dump(res)
    acting = ("Wait", "Take the lock", "Restore")
    done = [t for t in res.tasks if t["task"].startswith(acting) and t["event"] == "runner_on_ok"]
    assert done == [], dump(res)
    changed = out["changed"]
    # The one thing a run that could not start leaves: its own record, closed as ERROR.
    own = {f"{state_dir}/{rel}:" for rel in (".", "runs", f"runs/{unique}.json")}
    assert [d for d in changed if d.split(" ", 1)[0] not in own] == [], "\n".join(changed)
    if changed:
        data = json.loads((state_dir / "runs" / f"{unique}.json").read_text())
        assert data["verdict"] == "ERROR" and words in data["error"], data
    assert not os.path.exists(pwned(unique))


def _one_line(msg: str) -> None:
    """One clear line; Ansible's own argument check puts its fixed header on a line above."""
    lines = msg.strip().splitlines()
    if lines and lines[0] == "Validation of arguments failed:":
        lines = lines[1:]
    assert len(lines) == 1 and "Traceback" not in msg, msg


# --- modules, called in this process --------------------------------------------------

# (case id, module, options, words the message must hold). {state} is the test's state
# dir, {recipes} the example recipes, {file} an existing file, {pwn} the sentinel path,
# {u} the unique id; options whose value is None are left out.
MODULE_CASES = [
    ("snapshot recipe with /", "volume_snapshot", {"recipe": "a/b"},
     "recipe name 'a/b' is invalid"),
    ("snapshot recipe ..", "volume_snapshot",
     {"recipe": "..", "state": "present", "domain": "s{u}.ccci.test"},
     "recipe name '..' is invalid"),
    ("snapshot recipe capitals", "volume_snapshot", {"recipe": "Notes", "state": "absent"},
     "recipe name 'Notes' is invalid"),
    ("snapshot domain capitals", "volume_snapshot",
     {"recipe": "notes", "state": "present", "domain": "Warm-Notes.ccci.test"},
     "domain 'Warm-Notes.ccci.test' is invalid"),
    ("snapshot domain one label", "volume_snapshot",
     {"recipe": "notes", "state": "restored", "domain": "localhost"},
     "domain 'localhost' is invalid"),
    ("snapshot domain injection", "volume_snapshot",
     {"recipe": "notes", "state": "present", "domain": "a.b;touch {pwn}"},
     "domain 'a.b;touch {pwn}' is invalid"),
    ("snapshot domain missing", "volume_snapshot", {"recipe": "notes", "state": "restored"},
     "state is restored but all of the following are missing: domain"),
    ("snapshot volumes ..", "volume_snapshot",
     {"recipe": "notes", "state": "present", "domain": "s{u}.ccci.test",
      "volumes": ["../../../etc"]},
     "no volume '../../../etc'"),
    ("snapshot state dir relative", "volume_snapshot", {"recipe": "notes", "state_dir": "var"},
     "state directory 'var' is relative"),
    ("snapshot state dir /", "volume_snapshot", {"recipe": "notes", "state_dir": "/",
                                                 "state": "absent"},
     "state directory '/' is refused"),
    ("snapshot state dir a file", "volume_snapshot",
     {"recipe": "notes", "state_dir": "{file}", "state": "absent"},
     "exists and is not a directory"),
    ("snapshot max_members 0", "volume_snapshot", {"recipe": "notes", "max_members": 0},
     "max_members 0 is invalid"),
    ("snapshot state unknown", "volume_snapshot", {"recipe": "notes", "state": "wiped"},
     "got: wiped"),
    ("lock recipe ..", "warm_lock", {"recipe": "../x", "run_id": "{u}", "state": "acquired"},
     "recipe name '../x' is invalid"),
    ("lock recipe capitals", "warm_lock", {"recipe": "Notes", "run_id": "{u}",
                                           "state": "acquired"},
     "recipe name 'Notes' is invalid"),
    ("lock run id bad", "warm_lock", {"recipe": "notes", "run_id": "zz-top", "state": "acquired"},
     "run id 'zz-top' is invalid"),
    ("lock state dir relative", "warm_lock",
     {"recipe": "notes", "run_id": "{u}", "state": "acquired", "state_dir": "locks"},
     "state directory 'locks' is relative"),
    ("record run id path", "run_record",
     {"run_id": "../../etc/passwd", "state": "started", "mode": "cold", "recipe": "notes"},
     "run id '../../etc/passwd' is invalid"),
    ("record run id capitals", "run_record",
     {"run_id": "ABCDEF", "state": "started", "mode": "cold", "recipe": "notes"},
     "run id 'ABCDEF' is invalid"),
    ("record state dir /", "run_record",
     {"run_id": "{u}", "state": "started", "mode": "cold", "recipe": "notes", "state_dir": "/"},
     "state directory '/' is refused"),
    ("ref --upload-pack", "recipe_ref",
     {"recipe": "custom-html", "ref": "--upload-pack=touch {pwn}", "recipes_dir": "{recipes}"},
     "ref '--upload-pack=touch {pwn}' is invalid"),
    ("ref -c option", "recipe_ref",
     {"recipe": "custom-html", "ref": "-cprotocol.ext.allow=always", "recipes_dir": "{recipes}"},
     "ref '-cprotocol.ext.allow=always' is invalid"),
    ("ref reflog syntax", "recipe_ref",
     {"recipe": "custom-html", "ref": "main@{{1}}", "recipes_dir": "{recipes}"},
     "ref 'main@{{1}}' is invalid"),
    ("ref ancestry syntax", "recipe_ref",
     {"recipe": "custom-html", "ref": "1.1.0+1.29~1", "recipes_dir": "{recipes}"},
     "ref '1.1.0+1.29~1' is invalid"),
    ("ref unknown branch", "recipe_ref",
     {"recipe": "custom-html", "ref": "no-such-branch", "recipes_dir": "{recipes}"},
     "ref 'no-such-branch' not found"),
    ("ref recipe ..", "recipe_ref", {"recipe": "..", "recipes_dir": "{recipes}"},
     "recipe name '..' is invalid"),
    ("app domain capitals", "recipe_app", {"domain": "Bad.Example.org", "state": "absent"},
     "domain 'Bad.Example.org' is invalid"),
    ("app domain wildcard", "recipe_app", {"domain": "*.ccci.test", "state": "absent"},
     "domain '*.ccci.test' is invalid"),
    ("app domain 300 chars", "recipe_app", {"domain": "a" * 300 + ".org", "state": "undeployed"},
     "is invalid"),
    ("app recipe with /", "recipe_app",
     {"domain": "a{u}.ccci.test", "recipe": "custom-html/x", "recipes_dir": "{recipes}"},
     "recipe name 'custom-html/x' is invalid"),
    ("catalog recipe path", "catalog_entry", {"recipe": "../../etc/passwd"},
     "recipe name '../../etc/passwd' is invalid"),
]  # fmt: skip


@pytest.fixture
def call(capsys, monkeypatch):
    """Run a module's main() here, as a module process would; its JSON result."""
    from ansible.module_utils import _internal as ansible_internal
    from ansible.module_utils.common import warnings as ansible_warnings
    from support.modules import run_main

    monkeypatch.setattr(ansible_internal, "is_controller", False)

    def _call(module: str, args: dict) -> dict:
        import importlib

        mod = importlib.import_module(f"ansible_collections.coopcloud.ci.plugins.modules.{module}")
        ansible_warnings._global_warnings.clear()
        ansible_warnings._global_deprecations.clear()
        capsys.readouterr()
        return run_main(mod, args, capsys)[1]

    return _call


def _fill_args(args: dict, names: dict) -> dict:
    out = {}
    for key, value in args.items():
        if isinstance(value, list):
            out[key] = [fill(v, **names) for v in value]
        else:
            out[key] = fill(value, **names)
    return out


@pytest.mark.parametrize(
    "module, args, words",
    [pytest.param(m, a, w, id=c) for c, m, a, w in MODULE_CASES],
)
def test_a_bad_module_option_fails_with_one_line_and_changes_nothing(
    module, args, words, call, examples, examples_root, state_dir, unique, docker_client, tmp_path
):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("keep me\n")
    names = {"u": unique, "pwn": pwned(unique), "file": str(a_file),
             "state": str(state_dir), "recipes": str(examples_root)}  # fmt: skip
    args = _fill_args(args, names)
    if "state_dir" in MODULE_SPECS_WITH_STATE_DIR.get(module, ()) and "state_dir" not in args:
        args["state_dir"] = str(state_dir)
    words = fill(words, **names)
    (state_dir / "notes").mkdir()  # something to keep: an existing recipe folder
    (state_dir / "notes" / "canonical.json").write_text('{"kept": true}\n')
    world = World(
        docker_client,
        unique,
        roots=[state_dir, examples_root, a_file],
        sentinels=[Path(pwned(unique)), Path("/tmp/x"), Path("/runs"), Path("/notes"),
                   Path("/etc/passwd.json"), Path.cwd() / "var", Path.cwd() / "locks"],
    )  # fmt: skip
    before = world.take()
    out = call(module, args)
    after = world.take()
    assert out.get("failed") is True, out
    assert words in out["msg"], out
    _one_line(out["msg"])
    assert differences(before, after) == []


MODULE_SPECS_WITH_STATE_DIR = {
    "volume_snapshot": ("state_dir",),
    "warm_lock": ("state_dir",),
    "run_record": ("state_dir",),
}


# --- keycloak_realm against the Keycloak double -----------------------------------------

KC_PASSWORD = "reliability-admin-pw"

# (case id, options, words). No option may make the module touch `master` or any realm
# that is not the run's own.
REALM_CASES = [
    ("realm recipe with space", {"recipe": "bad recipe", "run_id": "{u}"},
     "recipe name 'bad recipe' is invalid"),
    ("realm recipe capitals", {"recipe": "Notes", "run_id": "{u}"},
     "recipe name 'Notes' is invalid"),
    ("realm run id short", {"recipe": "notes", "run_id": "12345"},
     "run id '12345' is invalid"),
    ("realm run id injection", {"recipe": "notes", "run_id": "$(id)"},
     "run id '$(id)' is invalid"),
    ("realm absent master by run id", {"state": "absent", "recipe": "notes", "run_id": "master"},
     "run id 'master' is invalid"),
    ("realm absent master by empty run id", {"state": "absent", "recipe": "master",
                                             "run_id": ""},
     "run id '' is invalid"),
    ("realm absent master by recipe only", {"state": "absent", "recipe": "master"},
     "state is absent but all of the following are missing: run_id"),
    ("realm absent master via ..", {"state": "absent", "recipe": "..", "run_id": "{u}"},
     "recipe name '..' is invalid"),
    ("realm reaped recipe capitals", {"state": "reaped", "recipe": "Master"},
     "recipe name 'Master' is invalid"),
    ("realm reaped bad live run id", {"state": "reaped", "live_run_ids": ["../x"]},
     "run id '../x' is invalid"),
]  # fmt: skip


@pytest.mark.parametrize("args, words", [pytest.param(a, w, id=c) for c, a, w in REALM_CASES])
def test_a_bad_realm_option_touches_no_realm(args, words, call, unique, tmp_path):
    from support.keycloak_double import KeycloakDouble

    names = {"u": unique}
    args = _fill_args(args, names)
    words = fill(words, **names)
    with KeycloakDouble(admin_password=KC_PASSWORD) as kc:
        kc.add_realm("other-app")  # a realm that is not the CI's
        kc.add_realm(f"notes-{unique}")  # and a live run's own
        realms = kc.realm_names()
        out = call("keycloak_realm", {"keycloak_url": kc.base_url,
                                      "admin_password": KC_PASSWORD, "retries": 0, **args})  # fmt: skip
        writes = [r for r in kc.requests if r[0] in ("POST", "PUT", "DELETE")
                  and r[1].startswith("/admin")]  # fmt: skip
        assert kc.realm_names() == realms and "master" in realms
    assert out.get("failed") is True, out
    assert words in out["msg"], out
    _one_line(out["msg"])
    assert KC_PASSWORD not in json.dumps(out)
    assert writes == []


# --- trigger comments: not errors, and not runs ----------------------------------------

TRIGGERS = [
    ("shell after", "!testme; rm -rf /"),
    ("substitution", "!testme $(touch /tmp/x)"),
    ("option injection", "!testme --quick --upload-pack=touch /tmp/x"),
    ("capitals", "!TESTME"),
    ("flag value", "!testme --quick=1"),
    ("short flag", "!testme -q"),
    ("words before", "please !testme"),
    ("split over lines", "!testme\n--quick"),
    ("glued", "!testmexyz"),
    ("empty", ""),
    ("not a string", None),
    ("a list", ["!testme"]),
    ("NUL byte", "!testme\x00--quick"),
    ("10k characters", "!testme " + "x" * 10000),
]


@pytest.mark.parametrize("comment", [pytest.param(c, id=i) for i, c in TRIGGERS])
def test_a_trigger_comment_that_is_not_a_command_asks_for_no_run(comment):
    from ansible_collections.coopcloud.ci.plugins.filter.parse_trigger import parse_trigger

    assert parse_trigger(comment) == {"run": False, "mode": None}
    assert parse_trigger("  !testme\t--quick \n") == {"run": True, "mode": "quick"}
