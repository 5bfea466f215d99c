# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``ccci`` entry point: run a play of the collection through ansible-runner.
PRIVATE to the collection: no compatibility promises.

systemd timers (role ``coopcloud.ci.ci_host``) and operators start plays with::

    ccci run sweep.yml [-e key=value ...] [--state-dir DIR] [--check]
    ccci sweep | reconcile <target> | reap | alerts | status
    ccci unit-failed <unit> [--state-dir DIR]   (OnFailure= of the units: an alert file)
    ccci init-state [--state-dir DIR]           (make a state dir on purpose)

Every command but ``init-state`` refuses a state dir that was not initialised (no
``<state>/.ccci-state``): a mistyped state dir is an error, never a new folder.

Each run gets an ident that sorts by time and names the play
(``20261126T233000Z-sweep-1a2b3c``); its ansible-runner artifacts live under
``<state_dir>/runner/<play>/artifacts/<ident>/``, the newest ``CCCI_KEEP_ARTIFACTS`` (30)
of each play kept. The play's output goes to our stdout (the journal under systemd) and
our exit status is the play's (2 for usage errors).

Secrets never reach ansible-runner. ansible-runner writes the whole environment of the
play into ``artifacts/<ident>/command`` and extra vars into ``env/extravars``, so:

- ``-e`` refuses keys that look secret and URLs carrying credentials (use the environment);
- environment variables whose names look secret (:func:`is_secret_name`) are taken out of
  the environment ansible-runner sees and handed to the play process through an anonymous
  in-memory file (``memfd``) of this process: ansible-runner starts ``ccci _exec``, which
  reads them from ``/proc/<ccci pid>/fd/<n>``, puts them back into its environment and
  execs ``ansible-playbook``. Modules read them with ``env_fallback`` as usual. The memfd
  lives in memory only and disappears with this process, however it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    DEFAULT_STATE_DIR,
    CcciError,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    init_state_dir,
    marker_path,
    require_state_dir,
)

DEFAULT_KEEP = 30
EXIT_USAGE = 2
#: Name of the (non-secret) variable telling ``ccci _exec`` where the secrets wait.
SECRETS_CHANNEL_VAR = "_CCCI_SECRETS_FD_PATH"

#: Convenience subcommands -> playbook of ``playbooks/``.
PLAYS = {
    "sweep": "sweep.yml",
    "reconcile": "reconcile.yml",
    "reap": "reap.yml",
    "alerts": "alerts.yml",
    "status": "status.yml",
}

_SECRET_WORDS = re.compile(
    r"pass(word|wd|phrase)?|secret|token|credential|private|api_?key|auth|cookie|session",
    re.IGNORECASE,
)
_URL_WORD = re.compile(r"ur[li]s?(?![a-z])", re.IGNORECASE)
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAY_NAME_RE = re.compile(r"[^a-z0-9-]+")


class UsageError(CcciError, ValueError):
    """The caller asked for something we refuse; the message says what to do instead."""


def is_secret_name(name: str) -> bool:
    """True for names that look like they hold a secret: passwords, tokens, keys, URLs.

    URLs count because alert and webhook URLs carry tokens. Matching too much is harmless
    (the value still reaches the play, only not through ansible-runner).
    """
    parts = re.split(r"[_\W]+", name)
    return bool(_SECRET_WORDS.search(name)) or any(_URL_WORD.fullmatch(p) for p in parts if p)


def url_has_credentials(value: str) -> bool:
    """True when ``value`` contains a URL with a user or password part (``s://u:p@h``)."""
    for token in re.findall(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s,;]+", value):
        try:
            parts = urlsplit(token)
        except ValueError:
            return True
        if parts.username or parts.password or "@" in parts.netloc:
            return True
    return False


def parse_extravars(pairs: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}`` (strings, like ``ansible-playbook -e k=v``).

    Refuses malformed pairs, secret-looking keys and values that are URLs with
    credentials: those belong in the environment, where modules find them by
    ``env_fallback`` and ansible-runner never writes them down.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _KEY_RE.match(key):
            raise UsageError(
                f"extra var {pair!r} is not of the form key=value with key a variable name"
            )
        if is_secret_name(key):
            raise UsageError(
                f"extra var {key!r} looks secret: ccci does not pass secrets with -e because "
                "ansible-runner writes extra vars to disk; set it in the environment instead "
                "(e.g. in the systemd EnvironmentFile, /etc/ccci/env)"
            )
        if url_has_credentials(value):
            raise UsageError(
                f"extra var {key!r} holds a URL with credentials: set it in the environment "
                "instead (e.g. in the systemd EnvironmentFile, /etc/ccci/env)"
            )
        out[key] = value
    return out


def play_label(playbook: str) -> str:
    """``playbooks/sweep.yml`` -> ``sweep``: the play's name as it appears in idents."""
    stem = Path(playbook).name
    for suffix in (".yml", ".yaml"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    label = _PLAY_NAME_RE.sub("-", stem.lower()).strip("-")
    return label[:40] or "play"


def make_ident(playbook: str, now: datetime | None = None, token: str | None = None) -> str:
    """``<UTC yyyymmddThhmmssZ>-<play>-<6 hex>``: sorts by start time, names the play."""
    now = now or datetime.now(UTC)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{play_label(playbook)}-{token or secrets.token_hex(3)}"


def split_environment(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split into (what ansible-runner may see, secrets that bypass it)."""
    public: dict[str, str] = {}
    hidden: dict[str, str] = {}
    for key, value in env.items():
        if key == SECRETS_CHANNEL_VAR:
            continue
        (hidden if is_secret_name(key) else public)[key] = value
    return public, hidden


def collection_root() -> Path:
    """The collection's root: the folder holding ``galaxy.yml``/``MANIFEST.json`` and bin/."""
    return Path(__file__).resolve().parents[2]


def collections_path(root: Path) -> Path:
    """The folder that holds ``ansible_collections/coopcloud/ci`` for this root."""
    if root.parent.name == "coopcloud" and root.parent.parent.name == "ansible_collections":
        return root.parent.parent.parent
    return root / "collections"


def keep_artifacts(env: Mapping[str, str]) -> int:
    raw = env.get("CCCI_KEEP_ARTIFACTS", str(DEFAULT_KEEP))
    try:
        keep = int(raw)
    except ValueError:
        raise UsageError(
            f"CCCI_KEEP_ARTIFACTS={raw!r} is not a whole number of runs to keep"
        ) from None
    if keep < 1:
        raise UsageError(f"CCCI_KEEP_ARTIFACTS={raw!r} must be at least 1")
    return keep


def resolve_playbook(root: Path, name: str) -> Path:
    """A name of ``playbooks/`` (``sweep`` or ``sweep.yml``) or a path to a playbook file."""
    if "/" not in name:
        for candidate in (name, f"{name}.yml"):
            path = root / "playbooks" / candidate
            if path.is_file():
                return path
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    raise UsageError(
        f"playbook {name!r} not found: give a play of {root / 'playbooks'} "
        "(e.g. sweep.yml) or the path of a playbook file"
    )


@dataclass
class RunSpec:
    """Everything one run needs; built by :func:`build_spec` from the command line."""

    playbook: Path
    extravars: dict[str, str]
    state_dir: Path
    check: bool
    root: Path
    inventory: str
    keep: int
    ident: str
    public_env: dict[str, str] = field(default_factory=dict)
    hidden_env: dict[str, str] = field(default_factory=dict)

    @property
    def private_data_dir(self) -> Path:
        return self.state_dir / "runner" / play_label(str(self.playbook))

    @property
    def artifact_dir(self) -> Path:
        return self.private_data_dir / "artifacts" / self.ident

    def envvars(self) -> dict[str, str]:
        """Variables set on top of the (public) environment: no secrets here."""
        return {
            "ANSIBLE_CONFIG": str(self.root / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path(self.root)),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "CCCI_RUN_IDENT": self.ident,
        }

    def cmdline(self, ccci: Path) -> list[str]:
        """Arguments after the Python interpreter: ``ccci _exec <playbook> [--check]``."""
        args = [str(ccci), "_exec", str(self.playbook)]
        if self.check:
            args.append("--check")
        return args


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra variable for the play (no secrets: use the environment)",
    )
    common.add_argument(
        "--state-dir",
        default=None,
        help=f"state root (default $CCCI_STATE_DIR or {DEFAULT_STATE_DIR})",
    )
    common.add_argument("--check", action="store_true", help="run the play in check mode")

    parser = argparse.ArgumentParser(
        prog="ccci",
        description="Run a coopcloud.ci play through ansible-runner; exits with the play's rc.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", parents=[common], help="run playbooks/<PLAYBOOK> (or a path)")
    run.add_argument("playbook")
    for name in ("sweep", "reap", "alerts", "status"):
        sub.add_parser(name, parents=[common], help=f"run playbooks/{PLAYS[name]}")
    rec = sub.add_parser("reconcile", parents=[common], help="run playbooks/reconcile.yml")
    rec.add_argument("target", help="warm-infra target (ccci_warm_infra name)")
    return parser


def build_spec(
    argv: Sequence[str],
    env: Mapping[str, str],
    root: Path | None = None,
    now: datetime | None = None,
) -> RunSpec:
    """Parse the command line; raise :class:`UsageError` on anything we refuse."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse printed its own message (or the help)
        if exc.code in (0, None):
            raise
        raise UsageError("") from exc
    root = root or collection_root()
    extravars = parse_extravars(args.extra_vars)
    if args.command == "run":
        name = args.playbook
    else:
        name = PLAYS[args.command]
        if args.command == "reconcile":
            if "target" in extravars and extravars["target"] != args.target:
                raise UsageError("reconcile: give the target once, not also as -e target=...")
            extravars["target"] = args.target
    playbook = resolve_playbook(root, name)
    from_e = extravars.get("ccci_state_dir")
    if args.state_dir and from_e and from_e != args.state_dir:
        raise UsageError("give the state dir once: --state-dir and -e ccci_state_dir differ")
    state_dir = Path(args.state_dir or from_e or env.get("CCCI_STATE_DIR") or DEFAULT_STATE_DIR)
    if not state_dir.is_absolute():
        raise UsageError(f"state dir {str(state_dir)!r} must be an absolute path")
    if state_dir.exists() and not state_dir.is_dir():
        raise UsageError(f"state dir {str(state_dir)!r} exists and is not a directory")
    extravars.setdefault("ccci_state_dir", str(state_dir))
    inventory = env.get("CCCI_INVENTORY") or str(root / "inventory" / "local.yml")
    public, hidden = split_environment(env)
    return RunSpec(
        playbook=playbook,
        extravars=extravars,
        state_dir=state_dir,
        check=args.check,
        root=root,
        inventory=inventory,
        keep=keep_artifacts(env),
        ident=make_ident(str(playbook), now=now),
        public_env=public,
        hidden_env=hidden,
    )


def _secret_channel(hidden: Mapping[str, str]) -> tuple[int, str]:
    """An anonymous in-memory file holding ``hidden`` as JSON; (fd, path others can open)."""
    fd = os.memfd_create("ccci-secrets", os.MFD_CLOEXEC)
    os.write(fd, json.dumps(dict(hidden)).encode())
    return fd, f"/proc/{os.getpid()}/fd/{fd}"


def run(spec: RunSpec, ccci: Path, quiet: bool = False) -> int:
    """Run the play; return its exit status."""
    import ansible_runner  # imported late: `ccci _exec` and --help need no runner

    spec.private_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    bindir = os.path.dirname(sys.executable)
    path = spec.public_env.get("PATH", os.defpath)
    if bindir not in path.split(os.pathsep):
        path = bindir + os.pathsep + path
    channel_fd, channel_path = _secret_channel(spec.hidden_env)
    saved = dict(os.environ)
    try:
        # ansible-runner copies os.environ into the child's env and into artifacts/command:
        # show it only the public part.
        os.environ.clear()
        os.environ.update(spec.public_env)
        os.environ["PATH"] = path
        os.environ[SECRETS_CHANNEL_VAR] = channel_path
        result = ansible_runner.run(
            private_data_dir=str(spec.private_data_dir),
            project_dir=str(spec.root),
            binary=sys.executable,
            cmdline=shlex.join(spec.cmdline(ccci)),
            inventory=spec.inventory,
            extravars=spec.extravars,
            envvars=spec.envvars(),
            ident=spec.ident,
            rotate_artifacts=spec.keep,
            suppress_env_files=True,
            fact_cache_type="memory",
            quiet=quiet,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        os.close(channel_fd)
    rc = result.rc if isinstance(result.rc, int) else 1
    if result.status != "successful" and rc == 0:
        rc = 1
    return rc


def exec_playbook(argv: Sequence[str]) -> int:
    """``ccci _exec <ansible-playbook args>``: restore the hidden secrets, exec the play."""
    channel = os.environ.pop(SECRETS_CHANNEL_VAR, None)
    if channel:
        try:
            with open(channel, "rb") as handle:
                hidden = json.loads(handle.read() or b"{}")
        except (OSError, ValueError) as exc:
            print(f"ccci: cannot read the secrets handed over by ccci ({exc})", file=sys.stderr)
            return 1
        os.environ.update({str(k): str(v) for k, v in hidden.items()})
    bindir = os.path.dirname(sys.executable)
    binary = os.path.join(bindir, "ansible-playbook")
    if not os.access(binary, os.X_OK):
        binary = shutil.which("ansible-playbook") or ""
    if not binary:
        print("ccci: ansible-playbook not found beside Python or on PATH", file=sys.stderr)
        return 127
    os.execv(binary, [binary, *argv])
    return 127  # not reached


def _state_dir_command(
    prog: str, description: str, argv: Sequence[str], env: Mapping[str, str], *positional: str
) -> argparse.Namespace | int:
    """The arguments of a small command that takes ``--state-dir`` (default
    ``$CCCI_STATE_DIR``, then :data:`DEFAULT_STATE_DIR`), or the exit status of argparse."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for name in positional:
        parser.add_argument(name)
    parser.add_argument(
        "--state-dir", default=None, help=f"default $CCCI_STATE_DIR or {DEFAULT_STATE_DIR}"
    )
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else 0
    args.state_dir = args.state_dir or env.get("CCCI_STATE_DIR") or DEFAULT_STATE_DIR
    return args


def unit_failed(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """``ccci unit-failed <unit> [--state-dir DIR]``: the OnFailure= handler of the units
    (``ccci-failed@.service``) writes a ``unit-failed`` alert that the relay delivers."""
    from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import (
        AlertStore,
        raise_unit_failed,
    )

    args = _state_dir_command(
        "ccci unit-failed", "Raise an alert file for a failed systemd unit.", argv, env, "unit"
    )
    if isinstance(args, int):
        return args
    try:
        require_state_dir(args.state_dir)
        path = raise_unit_failed(AlertStore(args.state_dir), args.unit, dict(env))
    except CcciError as exc:
        print(f"ccci: no alert for the failed unit {args.unit}: {exc}", file=sys.stderr)
        return 1
    print(f"ccci: unit {args.unit} failed: alert {path}", flush=True)
    return 0


def init_state(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """``ccci init-state [--state-dir DIR]``: make the state dir on purpose (the marker)."""
    args = _state_dir_command(
        "ccci init-state",
        "Create the state dir (or adopt an existing folder) and mark it as one.",
        argv,
        env,
    )
    if isinstance(args, int):
        return args
    try:
        made = init_state_dir(args.state_dir)
    except (CcciError, OSError) as exc:
        print(f"ccci: cannot initialise the state dir {args.state_dir}: {exc}", file=sys.stderr)
        return 1
    word = "initialised" if made else "already initialised"
    print(f"ccci: state dir {args.state_dir} {word} ({marker_path(args.state_dir)})", flush=True)
    return 0


def main(argv: Sequence[str] | None = None, ccci: Path | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_exec"]:
        return exec_playbook(argv[1:])
    if argv[:1] == ["unit-failed"]:
        return unit_failed(argv[1:], os.environ)
    if argv[:1] == ["init-state"]:
        return init_state(argv[1:], os.environ)
    try:
        spec = build_spec(argv, os.environ)
    except UsageError as exc:
        if str(exc):
            print(f"ccci: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        require_state_dir(str(spec.state_dir))
    except CcciError as exc:
        print(f"ccci: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ccci = ccci or (spec.root / "bin" / "ccci")
    print(
        f"ccci: {spec.ident}: {spec.playbook.name}"
        f"{' (check mode)' if spec.check else ''}, artifacts in {spec.artifact_dir}",
        flush=True,
    )
    try:
        rc = run(spec, ccci)
    except Exception as exc:  # ansible-runner refusing its config, a full disk, ...
        print(f"ccci: {spec.ident}: the play could not start: {exc}", file=sys.stderr)
        return 1
    print(f"ccci: {spec.ident}: {spec.playbook.name} ended with rc={rc}", flush=True)
    return rc
