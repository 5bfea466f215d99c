# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker engines a run talks to, and whether they stayed up. PRIVATE to the collection.

A run talks to the engine of its environment (``DOCKER_HOST``, else the default socket)
and, on a swarm of several nodes, to the engines of ``CCCI_NODE_ENGINES``. When one of
them goes away mid-run (stopped, restarted, killed), what the run saw is no longer the
app's doing: a task whose container the restarted engine lost looks like a crash of the
app. Two things tell it:

* :func:`unreachable`: an error that means the engine does not answer at all (its socket
  gone, the connection refused or cut). :func:`._common.failure` turns it into one
  sentence naming the engine, with ``engine_fault`` set, and the stages stop the run on it
  instead of blaming the change under test.
* :func:`boot`: who answers at a unix socket, as the kernel says (the peer's pid through
  ``SO_PEERCRED``) and when that process started (``/proc``). The run record keeps it when
  the run starts (:func:`boots`) and compares at the finish (:func:`restarted`): a different
  process is a restarted engine, and the run ends ERROR naming it, whatever its stages said.
  An engine reached over TCP has no such identity here; only :func:`unreachable` covers it.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Mapping
from typing import Any

DEFAULT_ADDRESS = "unix:///var/run/docker.sock"
NODE_ENGINES_ENV = "CCCI_NODE_ENGINES"

#: How the SDK and its HTTP stack say the engine's socket does not answer.
UNREACHABLE_WORDS = (
    "connection refused",
    "connection aborted",
    "connection reset",
    "remotedisconnected",
    "remote end closed connection",
    "no such file or directory",
    "broken pipe",
)
#: How the ``docker`` CLI says so on its stderr.
CLI_UNREACHABLE_WORDS = (
    "cannot connect to the docker daemon",
    "error during connect",
    "is the docker daemon running",
)


def address(environ: Mapping[str, str] | None = None) -> str:
    """The engine of the environment, as ``docker`` itself picks it."""
    environ = os.environ if environ is None else environ
    return environ.get("DOCKER_HOST") or DEFAULT_ADDRESS


def node_engines(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``node hostname -> Docker engine URL`` from ``CCCI_NODE_ENGINES`` (a JSON object);
    :class:`ValueError` with the sentence for the user when it is not one."""
    raw = (os.environ if environ is None else environ).get(NODE_ENGINES_ENV, "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(
            f"{NODE_ENGINES_ENV} is not JSON ({exc}): give an object of node -> URL"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()
    ):
        raise ValueError(f"{NODE_ENGINES_ENV} must be a JSON object of node hostname -> engine URL")
    return data


def addresses(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every engine a run talks to: the environment's, then the nodes' (without repeats)."""
    environ = os.environ if environ is None else environ
    try:
        nodes = node_engines(environ)
    except ValueError:
        nodes = {}  # _remote refuses it with this sentence where the nodes are used
    return list(dict.fromkeys([address(environ), *nodes.values()]))


def unreachable(exc: BaseException | str) -> bool:
    """Does this error (or the ``docker`` CLI's stderr) say the engine does not answer?

    Follows the exception's cause, context and exception arguments, as the SDK wraps the
    socket's error in requests' and urllib3's. A timeout is not here: a busy engine still answers.
    """
    if isinstance(exc, str):
        return any(words in exc.lower() for words in CLI_UNREACHABLE_WORDS)
    if type(exc).__module__.startswith(("httpx", "httpcore")):
        return False  # an HTTP client's (an app's, Keycloak's), never the engine's
    todo: list[BaseException] = [exc]
    for _step in range(16):  # the chain is short; a cycle must not hang a module
        if not todo:
            return False
        current = todo.pop(0)
        if isinstance(current, (ConnectionRefusedError, ConnectionResetError, BrokenPipeError)):
            return True
        text = str(current).lower()
        if _from_docker(current) and any(words in text for words in UNREACHABLE_WORDS):
            return True
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [a for a in current.args if isinstance(a, BaseException)]  # requests wraps so
    return False


def _from_docker(exc: BaseException) -> bool:
    """An error of the SDK, its HTTP stack or the socket (not e.g. a missing file)."""
    module = type(exc).__module__
    return module.startswith(("docker", "requests", "urllib3", "http.client")) or isinstance(
        exc, ConnectionError
    )


def fault_sentence(exc: BaseException | str, where: str | None = None) -> str:
    """One sentence: the engine at ``where`` does not answer, and what it said."""
    where = where or address()
    said = " ".join(str(exc).split())
    return (
        f"the Docker engine at {where} does not answer ({said}): is dockerd running? the run "
        "cannot go on without it, and what it saw of the app is not the change's doing"
    )


# --- who answers at a socket ------------------------------------------------------------


def _socket_path(url: str) -> str | None:
    if url.startswith("unix://"):
        return url[len("unix://") :]
    return None


def _boot_time() -> float:
    with open("/proc/stat", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _start_ticks(pid: int) -> int:
    """When process ``pid`` started, in clock ticks since the machine booted (``/proc``):
    fixed for the life of the process, unlike the wall-clock time derived from it."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22, starttime, counted after the command's ")"


def _started(ticks: int) -> float:
    """The wall-clock time (seconds since the epoch) of ``ticks`` after boot, for reading.
    The kernel's boot time (``btime``) moves when the clock is adjusted (seconds on a
    virtual machine), so this is never what tells two processes apart."""
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def boot(url: str) -> dict[str, Any] | None:
    """Who answers at engine ``url`` now: ``{address, pid, ticks, started}`` (the process,
    its start in clock ticks since boot, and that start as a time to read); ``answers:
    False`` when nothing does; ``None`` for an engine that is not a local unix socket."""
    path = _socket_path(url)
    if path is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
        ticks = _start_ticks(pid)
        return {"address": url, "pid": pid, "ticks": ticks, "started": round(_started(ticks), 2),
                "answers": True}  # fmt: skip
    except OSError:
        return {"address": url, "pid": None, "ticks": None, "started": None, "answers": False}
    finally:
        sock.close()


def boots(environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """:func:`boot` of every engine the run talks to (those that have an identity here)."""
    return [seen for seen in (boot(url) for url in addresses(environ)) if seen is not None]


def restarted(before: list[Mapping[str, Any]] | None) -> str | None:
    """What happened to the engines seen in ``before`` since then, in one sentence, or
    ``None`` when each is still the same process."""
    problems = []
    for was in before or []:
        if not was.get("answers"):
            continue  # it did not answer at the start: the run's own errors say so
        now = boot(was["address"])
        if now is None:
            continue
        if not now["answers"]:
            problems.append(f"the Docker engine at {was['address']} stopped during the run "
                            "and does not answer now")  # fmt: skip
        elif (now["pid"], now["ticks"]) != (was["pid"], was.get("ticks", now["ticks"])):
            problems.append(
                f"the Docker engine at {was['address']} restarted during the run (process "
                f"{was['pid']} then {now['pid']})"
            )
    if not problems:
        return None
    return (
        "; ".join(problems) + ": its containers may have been lost or restarted under the "
        "app, so this run's result is not the change's; the next run puts the canonical back"
    )
