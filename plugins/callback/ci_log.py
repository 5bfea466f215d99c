# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ci_log
type: stdout
short_description: Concise CI logs for the lanes - one line per step, stage results, the verdict last
version_added: 0.1.0
description:
  - A stdout callback for CI logs (Drone, the systemd timers). It prints one line per
    B(step) of a play, not one banner per task; each stage's result as it is recorded;
    a progress line while a task runs long; each error once; and, last, the run record's
    path and the verdict line (C(COLD VERDICT:) or C(QUICK VERDICT:)).
  - Select it with E(ANSIBLE_STDOUT_CALLBACK=coopcloud.ci.ci_log) (or C(stdout_callback)
    in C(ansible.cfg)). The default callback keeps working; the plays print multi-line
    text as lists of lines for it.
  - "How a step is recognised: a task written in the playbook itself (not in a role and
    not in an included file), or any task whose C(vars) hold C(ccci_step: true). A step's
    line is printed when its first result arrives, so a skipped step prints nothing."
  - "What else is printed: the C(msg) of C(debug) tasks that ran (a list one line per
    item); the result of every C(coopcloud.ci.run_record) call with C(state=stage)
    (C(stage <name>: <result> (<seconds>s) <message>)), and once each the stages a call
    records as skipped (its C(skipped)). Lines that begin with C(COLD VERDICT:) or C(QUICK VERDICT:) are
    held and printed last, after C(record: <path>)."
  - "Errors: a failed task is printed once (the same message is never repeated), and not
    at all when it is rescued by its block or ignored (the rescue reports it) or when the
    task's C(vars) hold C(ccci_log: quiet) (a failure that only restates the verdict)."
  - "A C(set_fact) of C(ccci_log_follow: <file>) makes the new lines of that file be
    printed while the next tasks run (the sweep's child cold runs write their log there
    through E(ANSIBLE_LOG_PATH))."
  - "Progress of long steps: before the first task the callback names a fresh progress
    file in E(CCCI_PROGRESS_FILE), which the modules it starts on the controller inherit;
    a module doing a long step (snapshot, extract, verify, a wait for a deploy) appends
    JSON lines to it, and the callback prints each new one (C(... <what>: <done> of
    <total> (<pct> %), <rate>/s)) within a second, so a long step shows a line at least
    every 5 s. A task that prints progress gets no C(still running) line."
options:
  progress_interval:
    description:
      - Seconds between two progress lines of a task that is still running; 0 for none.
    type: int
    default: 30
    env:
      - name: CCCI_LOG_PROGRESS
    ini:
      - section: callback_ci_log
        key: progress_interval
"""

import contextlib
import json
import os
import re
import tempfile
import threading
import time

from ansible.playbook.block import Block
from ansible.playbook.task_include import TaskInclude
from ansible.plugins.callback import CallbackBase

from ansible_collections.coopcloud.ci.plugins.module_utils._progress import ENV as PROGRESS_ENV
from ansible_collections.coopcloud.ci.plugins.module_utils._progress import read_lines

VERDICT = re.compile(r"^(COLD|QUICK) VERDICT:")
INDENT = "       "


def _lines(msg) -> list[str]:
    """A debug message as lines: a list one line per item, a string split, a dict as JSON."""
    if isinstance(msg, list):
        return [m if isinstance(m, str) else json.dumps(m) for m in msg]
    if isinstance(msg, dict):
        return json.dumps(msg, indent=2, sort_keys=True).splitlines()
    return str(msg).splitlines()


def _name(task) -> str:
    """The task's own name, without its role's."""
    return (task.name or task.action).strip()


def _rescued(task) -> bool:
    """True when a block around the task (its `block:` part) has a `rescue:`."""
    node = task
    parent = getattr(node, "_parent", None)
    while parent is not None:
        if (
            isinstance(parent, Block)
            and parent.rescue
            and any(getattr(x, "_uuid", None) == node._uuid for x in parent.block)
        ):
            return True
        node, parent = parent, getattr(parent, "_parent", None)
    return False


def _is_step(task) -> bool:
    if (task.vars or {}).get("ccci_step") is True:
        return True
    if task._role is not None:
        return False
    parent = getattr(task, "_parent", None)
    while parent is not None:
        if isinstance(parent, TaskInclude):
            return False
        parent = getattr(parent, "_parent", None)
    return True


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "coopcloud.ci.ci_log"

    def __init__(self):
        super().__init__()
        self._t0 = time.monotonic()
        self._pending = None  # (task uuid, line) of a step not printed yet
        self._errors: set[str] = set()
        self._held: list[str] = []  # the verdict lines the plays printed
        self._record_verdict = None  # the one the run record gave, if none was printed
        self._record = None
        self._skips_said: set = set()  # (record, stage) skip lines already printed
        self._running = None  # (name, started, follow path, offset)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = None
        self._following = None  # a file whose new lines are printed while tasks run
        self._offsets: dict[str, int] = {}
        self._progress = None  # the progress file the modules append to (CCCI_PROGRESS_FILE)
        self._progress_lock = threading.Lock()  # the ticker and the main thread both read it

    # ---- output --------------------------------------------------------------------
    def _say(self, line: str) -> None:
        with self._lock:
            self._display.display(line)

    def _flush_step(self) -> None:
        if self._pending is not None:
            line = self._pending[1]
            self._pending = None
            self._say(line)

    def _stamp(self) -> str:
        return f"[{int(time.monotonic() - self._t0):>4}s]"

    # ---- progress ------------------------------------------------------------------
    def _interval(self) -> int:
        try:
            return int(self.get_option("progress_interval"))
        except (KeyError, TypeError, ValueError):
            # under ansible-runner, awx_display subclasses this plugin with its own options
            try:
                return int(os.environ.get("CCCI_LOG_PROGRESS", "30"))
            except ValueError:
                return 30

    def _tick(self) -> None:
        interval = self._interval()
        next_at = None
        progressed = None  # the task that printed progress: its own lines say it still runs
        while not self._stop.wait(1):
            running = self._running
            if running is None:
                next_at = None
                continue
            name, started, follow, key = running
            if follow:
                self._follow(follow)
            if self._print_progress():
                progressed = key
            if not interval or progressed == key:
                continue
            if next_at is None or next_at[0] != key:
                next_at = (key, started + interval)
            if time.monotonic() >= next_at[1]:
                self._flush_step()
                self._say(f"{INDENT}... {name}: still running ({int(time.monotonic() - started)}s)")
                next_at = (key, next_at[1] + interval)

    def _follow(self, path: str) -> None:
        """Print the lines added to a file since the last look (a child run's log)."""
        offset = self._offsets.get(path, 0)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        if not end:
            return
        self._offsets[path] = offset + end
        self._flush_step()
        for raw in data[:end].decode("utf-8", "replace").splitlines():
            # ANSIBLE_LOG_PATH lines: "<date> p=<pid> u=<user> n=<name> | <text>"
            text = raw.split(" | ", 1)[1] if " | " in raw else raw
            if text.strip():
                self._say(f"{INDENT}| {text}")

    def _print_progress(self) -> bool:
        """Print the progress lines the modules appended since the last look."""
        with self._progress_lock:
            path = self._progress
            if path is None:
                return False
            texts, self._offsets[path] = read_lines(path, self._offsets.get(path, 0))
            if not texts:
                return False
            self._flush_step()
            for text in texts:
                self._say(f"{INDENT}... {text}")
            return True

    def _open_progress(self) -> None:
        """Name a fresh progress file for the modules this process starts (see DOCUMENTATION)."""
        try:
            fd, path = tempfile.mkstemp(prefix="ccci-progress-", suffix=".jsonl")
            os.close(fd)
        except OSError:
            return
        self._progress = path
        os.environ[PROGRESS_ENV] = path

    def _close_progress(self) -> None:
        self._print_progress()
        with self._progress_lock:
            path, self._progress = self._progress, None
        if path is not None:
            if os.environ.get(PROGRESS_ENV) == path:
                del os.environ[PROGRESS_ENV]
            with contextlib.suppress(OSError):
                os.unlink(path)

    def v2_playbook_on_start(self, playbook):
        self._open_progress()
        self._ticker = threading.Thread(target=self._tick, name="ci_log-progress", daemon=True)
        self._ticker.start()

    # ---- plays and tasks -----------------------------------------------------------
    def v2_playbook_on_play_start(self, play):
        name = play.get_name().strip()
        self._say(f"coopcloud.ci: {name}" if name else "coopcloud.ci: play")

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._running = (_name(task), time.monotonic(), self._following, task._uuid)
        if _is_step(task):
            self._pending = (task._uuid, f"{self._stamp()} {_name(task)}")

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _finished(self, result) -> None:
        if self._running is not None and self._running[3] == result.task._uuid:
            if self._running[2]:
                self._follow(self._running[2])
            self._running = None
        self._print_progress()

    def v2_runner_on_skipped(self, result):
        self._finished(result)
        if self._pending is not None and self._pending[0] == result.task._uuid:
            self._pending = None

    def v2_runner_on_ok(self, result):
        self._finished(result)
        self._flush_step()
        res = result.result
        action = result.task.action
        if action in ("debug", "ansible.builtin.debug", "ansible.legacy.debug"):
            for line in _lines(res.get("msg", "")):
                if VERDICT.match(line):
                    self._held.append(line)
                else:
                    self._say(f"{INDENT}{line}".rstrip())
            return
        follow = (res.get("ansible_facts") or {}).get("ccci_log_follow")
        if isinstance(follow, str) and follow:
            self._following = follow
        if action.endswith("run_record"):
            self._run_record(res)

    def _run_record(self, res) -> None:
        args = (res.get("invocation") or {}).get("module_args") or {}
        if res.get("path"):
            self._record = res["path"]
        if res.get("verdict_line"):
            self._record_verdict = res["verdict_line"]
        details = (res.get("record") or {}).get("stage_details") or {}
        # stages put aside as skipped, recorded by this write (run_record's `skipped`)
        for item in args.get("skipped") or []:
            name = (item or {}).get("stage")
            if name and (self._record, name) not in self._skips_said:
                self._skips_said.add((self._record, name))
                self._stage_line(name, "skip", details.get(name) or {}, item.get("message"))
        state = args.get("state")
        if state == "stage" and args.get("stage"):
            name = args["stage"]
            self._stage_line(name, args.get("result"), details.get(name) or {}, args.get("message"))

    def _stage_line(self, name: str, result, detail: dict, message) -> None:
        line = f"{INDENT}stage {name}: {result}"
        if detail.get("seconds") is not None:
            line += f" ({detail['seconds']}s)"
        message = (message or "").strip()
        if message:
            line += f" - {message.splitlines()[0][:160]}"
        self._say(line)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._finished(result)
        task = result.task
        if ignore_errors or _rescued(task) or (task.vars or {}).get("ccci_log") == "quiet":
            return
        self._flush_step()
        res = result.result
        msg = res.get("msg") or ""
        if not msg and isinstance(res.get("results"), list):
            msg = "; ".join(r.get("msg", "") for r in res["results"] if r.get("failed"))
        msg = str(msg or "failed").strip()
        if msg in self._errors:
            return
        self._errors.add(msg)
        self._say(f"ERROR ({_name(task)}): {msg}")
        for key in ("stderr", "stdout"):
            text = res.get(key)
            if isinstance(text, str) and text.strip():
                tail = text.strip().splitlines()[-10:]
                self._say(f"{INDENT}{key}:")
                for line in tail:
                    self._say(f"{INDENT}  {line}")

    def v2_runner_on_unreachable(self, result):
        self._finished(result)
        self._flush_step()
        msg = str(result.result.get("msg") or "unreachable")
        if msg not in self._errors:
            self._errors.add(msg)
            self._say(f"ERROR: {result.host.get_name()} unreachable: {msg}")

    # Loop items are reported with the task's own result.
    def v2_runner_item_on_ok(self, result):
        pass

    def v2_runner_item_on_failed(self, result):
        pass

    def v2_runner_item_on_skipped(self, result):
        pass

    def v2_playbook_on_stats(self, stats):
        self._stop.set()
        self._close_progress()
        self._flush_step()
        if self._record:
            self._say(f"record: {self._record}")
        verdicts = self._held or ([self._record_verdict] if self._record_verdict else [])
        if verdicts:
            for line in verdicts:
                self._say(line)
            return
        totals = {"ok": 0, "changed": 0, "failures": 0, "unreachable": 0}
        for host in sorted(stats.processed.keys()):
            summary = stats.summarize(host)
            for key in totals:
                totals[key] += summary.get(key, 0)
        self._say(
            f"done in {int(time.monotonic() - self._t0)}s: ok={totals['ok']} "
            f"changed={totals['changed']} failed={totals['failures']} "
            f"unreachable={totals['unreachable']}"
        )
