#!/usr/bin/env python3
"""A stand-in for the ``abra`` command line, for the abra driver's tests (abra cannot be
installed here). It keeps abra's contract as far as the driver relies on it:

* every command finds the app by its env file ``$ABRA_DIR/servers/<server>/<domain>.env``
  and fails, as abra does, when there is none ("app not found");
* ``app deploy -C -c -D -f -n <domain>`` deploys ``$ABRA_DIR/recipes/<TYPE>`` as it is
  checked out, with ``COMPOSE_FILE`` of the env file, through ``docker stack deploy``;
* ``app undeploy -n <domain>`` takes the stack off (``docker stack rm``);
* ``app remove -f -n <domain>`` deletes the app's env file;
* ``app secret insert -f <domain> <name> <version> <file>`` creates the swarm secret
  ``<stack>_<name>_<version>`` from the file's content, labelled with the stack's
  namespace as a stack deploy labels what it creates; the log gets the SHA-256 of the
  value (never the value), so tests can check which value was inserted.

Every call is appended as one JSON line (argv, ``ABRA_DIR``, cwd, outcome) to the file
named by ``$CCCI_ABRA_STANDIN_LOG``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys


def record(entry: dict) -> None:
    log = os.environ.get("CCCI_ABRA_STANDIN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def read_env(path: str) -> dict[str, str]:
    """The env file as the abra driver writes it: ``TYPE=...`` then ``KEY="value"``."""
    env = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle.read().splitlines():
            key, _, value = line.partition("=")
            if value.startswith('"') and value.endswith('"'):
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            env[key] = value
    return env


def main(argv: list[str]) -> int:
    abra_dir = os.environ.get("ABRA_DIR", "")
    entry = {"argv": argv, "abra_dir": abra_dir, "cwd": os.getcwd()}
    positional = [a for a in argv if not a.startswith("-")]
    inserting = positional[1:3] == ["secret", "insert"]
    domain = positional[3] if inserting and len(positional) == 7 else argv[-1]
    found = glob.glob(os.path.join(abra_dir, "servers", "*", f"{domain}.env")) if abra_dir else []
    if argv[:1] != ["app"] or not found:
        entry["outcome"] = "app not found"
        record(entry)
        print(f"FATA unable to find app {domain} (ABRA_DIR={abra_dir or 'unset'})", file=sys.stderr)
        return 1
    env = read_env(found[0])
    stack = env.get("STACK_NAME") or domain.replace(".", "_")
    verb = argv[1]
    if inserting:
        name, version, source = positional[4:7]
        if "-f" not in argv:  # the driver always passes the value in a file
            proc = subprocess.CompletedProcess(argv, 1, "", "the stand-in inserts from -f only\n")
        else:
            with open(source, "rb") as handle:
                value = handle.read()
            entry["inserted"] = {"name": name, "version": version,
                                 "sha256": hashlib.sha256(value).hexdigest()}  # fmt: skip
            proc = subprocess.run(
                ["docker", "secret", "create", "--label",
                 f"com.docker.stack.namespace={stack}", f"{stack}_{name}_{version}", "-"],
                input=value.decode(), capture_output=True, text=True,
            )  # fmt: skip
            proc.stdout = ""  # the secret's id
    elif verb == "deploy":
        recipe = env["TYPE"].split(":", 1)[0]
        cwd = os.path.join(abra_dir, "recipes", recipe)
        cmd = ["docker", "stack", "deploy", "--detach=true", "--resolve-image", "never"]
        for rel in (env.get("COMPOSE_FILE") or "compose.yml").split(":"):
            cmd += ["-c", rel]
        proc = subprocess.run(
            [*cmd, stack], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True
        )
    elif verb == "undeploy":
        proc = subprocess.run(
            ["docker", "stack", "rm", "--detach=false", stack], capture_output=True, text=True
        )
    elif verb == "remove":
        os.unlink(found[0])
        proc = subprocess.CompletedProcess(argv, 0, "", "")
    else:
        proc = subprocess.CompletedProcess(argv, 1, "", f"the stand-in has no {verb}\n")
    entry["outcome"] = f"rc {proc.returncode}"
    record(entry)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
