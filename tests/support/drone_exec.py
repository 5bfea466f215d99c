"""An emulator of drone-runner-exec for the tests: runs one Drone build on this host.

No Drone runner can be installed here, so the tests run ``docs/drone.example.yml`` through
this small stand-in, written from the runner's source (github.com/drone-runners/
drone-runner-exec at 9decf29, and github.com/drone/runner-go which it builds on), not from
our pipeline:

- Drone's server replaces ``${NAME}`` and ``$NAME`` in the configuration text before a
  runner sees it, with the build's variables (unknown names become empty) and ``$$`` as
  the escape for a literal ``$`` (drone/envsubst); :func:`substitute`.
- ``engine/compiler/compiler.go`` ``Compile``: a build root ``<tmp>/drone-<random>``
  holding ``home/drone`` (the build's own ``HOME``), ``drone/src`` (the workspace,
  ``DRONE_WORKSPACE`` and the working directory of every step) and ``opt/`` (one script per
  step, named by the step's slug). The environment of a step is, later keys winning: the
  host's ``PATH`` and ``USER`` only (``engine/compiler/env.go``, ``vars.go``), the
  runner's own ``DRONE_RUNNER_ENVIRON``, the build parameters, the ``DRONE_*`` variables of
  system, repo, build and stage (runner-go ``environ``), ``HOME``, ``DRONE_HOME``,
  ``DRONE_WORKSPACE``, ``GIT_TERMINAL_PROMPT=0``, then the step's own ``environment:``
  (static values, with ``$PATH`` references in ``PATH`` expanded from the runner's own
  environment: runner-go ``environ.Expand``) and its ``from_secret`` values. There is no
  pipeline-level ``environment:``: the ``Pipeline`` resource (``engine/resource/exec.go``)
  has no such field, so the key is dropped without a word. ``clone: disable: true``
  removes the clone step; with any ``depends_on`` the steps form a graph
  (``isGraph``), else each depends on the one before (``configureSerial``).
- runner-go ``shell/shell.go``: a step's ``commands`` become one script, ``set -e`` then
  ``echo + "<command>"`` and the command for each; it runs as ``/bin/sh -e <script>``.
- ``engine/exec.go`` ``Run``: ``exec.Command`` with exactly that environment (nothing
  else of the runner's), stdout and stderr into the step's log; ``Destroy`` removes the
  build root, ``HOME`` and workspace included, after the build; a cancel kills the step's
  shell process only (``cmd.Process.Kill``), not its children, and ``Run`` returns at once:
  nobody reads the step's output any more. Go's ``exec`` copies it from a pipe into the
  log writer; once that writer is closed the copy ends and the pipe's read end is closed
  (the writers then get SIGPIPE), and a writer that blocks leaves the pipe full. Both are
  emulated (:func:`run_build` ``cancel`` and ``cancel_output``).
- ``runtime/execer.go``: exit code 78 skips every step still pending and the build passes;
  a failing step fails the build unless it has ``failure: ignore``; after a failure the
  steps that run on success are skipped.

Steps run one at a time in dependency order (the real runner starts independent steps
together; the example's two lane steps never both do work). ``when:`` conditions and
``detach`` are not emulated and are refused, so a pipeline that needs them fails loudly.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_SUBST_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def substitute(text: str, variables: dict[str, str]) -> str:
    """What Drone's server does to the configuration text before the runner sees it."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return variables.get(match.group(1) or match.group(2), "")

    return _SUBST_RE.sub(one, text)


def script(commands: list[str]) -> str:
    """runner-go's shell.Script: ``set -e``, then each command traced and run."""
    out = ["", "set -e", ""]
    for command in commands:
        escaped = json.dumps(command).replace("$", "\\$")  # Go's %q, then $ escaped
        out += ["", f"echo + {escaped}", command, ""]
    return "\n".join(out)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass
class StepResult:
    name: str
    state: str  # success | failure | skipped | killed
    exit_code: int | None
    log: str


@dataclass
class BuildResult:
    status: str  # success | failure | killed
    steps: list[StepResult] = field(default_factory=list)
    root: Path | None = None  # removed after the build
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    #: read ends of cancelled steps' output left open (``cancel_output="unread"``)
    unread: list[Any] = field(default_factory=list)

    def step(self, name_start: str) -> StepResult:
        found = [s for s in self.steps if s.name.startswith(name_start)]
        assert len(found) == 1, [s.name for s in self.steps]
        return found[0]

    def log(self) -> str:
        return "\n".join(f"--- {s.name}: {s.state} ({s.exit_code})\n{s.log}" for s in self.steps)


def build_environ(build: dict[str, Any], repo: str, link_base: str) -> dict[str, str]:
    """The ``DRONE_*`` variables runner-go's ``environ`` package sets for a build."""
    owner, name = repo.split("/", 1)
    sha = build["after"]
    branch = build.get("target") or ""
    return {
        "CI": "true",
        "DRONE": "true",
        "DRONE_REPO": repo,
        "DRONE_REPO_OWNER": owner,
        "DRONE_REPO_NAMESPACE": owner,
        "DRONE_REPO_NAME": name,
        "DRONE_REPO_BRANCH": branch,
        "DRONE_BUILD_NUMBER": str(build["number"]),
        "DRONE_BUILD_EVENT": build.get("event", "custom"),
        "DRONE_BUILD_STATUS": "success",
        "DRONE_BUILD_LINK": f"{link_base}/{repo}/{build['number']}",
        "DRONE_COMMIT": sha,
        "DRONE_COMMIT_SHA": sha,
        "DRONE_COMMIT_BEFORE": build.get("before", sha),
        "DRONE_COMMIT_AFTER": sha,
        "DRONE_COMMIT_REF": build.get("ref", ""),
        "DRONE_COMMIT_BRANCH": branch,
        "DRONE_BRANCH": branch,
        "DRONE_SYSTEM_HOST": link_base.split("://", 1)[-1],
        "DRONE_SYSTEM_PROTO": link_base.split("://", 1)[0],
        "DRONE_STAGE_KIND": "pipeline",
        "DRONE_STAGE_TYPE": "exec",
    }


def compile_pipeline(text: str, variables: dict[str, str]) -> dict[str, Any]:
    """The one ``kind: pipeline``, ``type: exec`` document, after Drone's substitution."""
    docs = [d for d in yaml.safe_load_all(substitute(text, variables)) if d]
    pipelines = [d for d in docs if d.get("kind") == "pipeline" and d.get("type") == "exec"]
    assert len(pipelines) == 1, "exactly one exec pipeline is emulated"
    pipeline = pipelines[0]
    for step in pipeline["steps"]:
        for unsupported in ("when", "detach", "image"):
            assert unsupported not in step, f"step {step['name']!r}: {unsupported} not emulated"
    return pipeline


def order(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dependency order: a graph when any step has ``depends_on``, else serial."""
    if not any(s.get("depends_on") for s in steps):
        return list(steps)
    done: list[str] = []
    out = []
    pending = list(steps)
    while pending:
        ready = [s for s in pending if all(d in done for d in s.get("depends_on") or [])]
        assert ready, f"depends_on names an unknown step or a cycle: {[s['name'] for s in pending]}"
        for step in ready:
            out.append(step)
            done.append(step["name"])
            pending.remove(step)
    return out


def run_build(
    pipeline_text: str,
    build: dict[str, Any],
    repo: str,
    *,
    link_base: str,
    secret_values: dict[str, str] | None = None,
    runner_environ: dict[str, str] | None = None,
    host_env: dict[str, str] | None = None,
    tmp_root: str | None = None,
    timeout: float = 1800,
    cancel: threading.Event | None = None,
    cancel_output: str = "closed",
    on_step: Any = None,
) -> BuildResult:
    """Run ``build`` (a Drone build as the API returns it, with ``params``) of ``repo``.

    ``cancel`` set while a step runs cancels the build as the runner does: SIGKILL to the
    step's shell only, its output no longer read - ``cancel_output`` ``closed`` (the read
    end closed: writers get SIGPIPE) or ``unread`` (left open and full until the build's
    result is returned). ``on_step(name, proc)`` is called as each step's shell starts.
    """
    host_env = dict(os.environ if host_env is None else host_env)
    drone_vars = build_environ(build, repo, link_base)
    params = {k: str(v) for k, v in (build.get("params") or {}).items()}
    pipeline = compile_pipeline(pipeline_text, {**drone_vars, **params})
    root = Path(tmp_root or tempfile.gettempdir()) / f"drone-{secrets.token_hex(16)}"
    home, src, opt = root / "home" / "drone", root / "drone" / "src", root / "opt"
    for folder in (home, src, opt):
        folder.mkdir(mode=0o700, parents=True)
    base = {k: host_env[k] for k in ("PATH", "USER") if host_env.get(k)}
    base.update(runner_environ or {})
    base.update(params)
    base.update(drone_vars)
    base.update(
        {
            "HOME": str(home),
            "HOMEPATH": str(home),
            "USERPROFILE": str(home),
            "DRONE_HOME": str(src),
            "DRONE_WORKSPACE": str(src),
            "GIT_TERMINAL_PROMPT": "0",
        }
    )
    result = BuildResult(status="success", root=root)
    skip_rest = False
    try:
        for number, step in enumerate(order(pipeline["steps"]), start=1):
            name = step["name"]
            if skip_rest or result.status == "failure":
                result.steps.append(StepResult(name, "skipped", None, ""))
                continue
            env = dict(base, DRONE_STEP_NAME=name, DRONE_STEP_NUMBER=str(number))
            for key, value in (step.get("environment") or {}).items():
                if isinstance(value, dict) and "from_secret" in value:
                    continue
                value = "" if value is None else str(value)
                if key == "PATH":  # environ.Expand: $PATH and friends from the runner's env
                    value = re.sub(
                        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                        lambda m: host_env.get(m.group(1), ""),
                        value,
                    )
                env[key] = value
            for key, value in (step.get("environment") or {}).items():
                if isinstance(value, dict) and "from_secret" in value:
                    found = (secret_values or {}).get(value["from_secret"])
                    if found is not None:
                        env[key] = found
            path = opt / slug(name)
            path.write_text(script(step.get("commands") or []))
            path.chmod(0o700)
            result.envs[name] = env
            proc = subprocess.Popen(
                ["/bin/sh", "-e", str(path)],
                cwd=src,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            if on_step is not None:
                on_step(name, proc)
            output = _Output(proc.stdout)
            if _wait_step(proc, output, timeout, cancel, cancel_output):
                result.steps.append(StepResult(name, "killed", None, output.text()))
                result.status = "killed"
                if cancel_output == "unread":
                    result.unread.append(proc.stdout)
                skip_rest = True
                continue
            ignore = str(step.get("failure", "")).lower() == "ignore"
            state = "success" if proc.returncode in (0, 78) else "failure"
            result.steps.append(StepResult(name, state, proc.returncode, output.text()))
            if proc.returncode == 78:
                skip_rest = True
            elif state == "failure" and not ignore:
                result.status = "failure"
    finally:
        shutil.rmtree(root, ignore_errors=True)  # engine.Destroy
    return result


class _Output:
    """The step's output, copied from its pipe (Go's exec: a goroutine into the log)."""

    def __init__(self, pipe) -> None:
        self.pipe, self.chunks, self.stopped = pipe, [], threading.Event()
        self.thread = threading.Thread(target=self._copy, daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        fd = self.pipe.fileno()
        while not self.stopped.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                self.chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


def _wait_step(proc, output: _Output, timeout: float, cancel, cancel_output: str) -> bool:
    """Wait for the step: its shell's exit and the end of its output. True when cancelled."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None or output.thread.is_alive():
        if cancel is not None and cancel.is_set():
            proc.kill()  # engine/exec.go: cmd.Process.Kill(), the shell only
            proc.wait()
            output.stopped.set()  # Run returns: nobody reads the output any more
            output.thread.join()
            if cancel_output == "closed":
                proc.stdout.close()
            return True
        if time.monotonic() > deadline:
            proc.kill()
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.05)
    proc.stdout.close()
    return False


_ADAPT_RE = re.compile(r"^(\s*)([A-Z_]+): (\S+)( # adapt\b.*)$")


def adapt(text: str, values: dict[str, str]) -> str:
    """``docs/drone.example.yml`` with the values of the lines marked "adapt" replaced, as an
    operator does when pasting it; every marked line must be given, nothing else changes."""
    seen = []
    out = []
    for line in text.splitlines(keepends=True):
        match = _ADAPT_RE.match(line.rstrip("\n"))
        if match:
            indent, key, _old, comment = match.groups()
            assert key in values, f"no value for the adapted key {key}"
            seen.append(key)
            line = f"{indent}{key}: {values[key]}{comment}\n"
        out.append(line)
    assert sorted(seen) == sorted(values), f"adapt lines {seen}, values for {sorted(values)}"
    return "".join(out)
