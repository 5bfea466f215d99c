"""The recipe's secrets key (plugins/module_utils/_secretkey.py) and abra's secret insert."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils._appenv import CHARSETS, SecretSpec
from ansible_collections.coopcloud.ci.plugins.module_utils._secretkey import (
    KEY_BYTES,
    SecretKey,
    derive,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import StateError


def test_derive_is_deterministic_per_name_and_version_and_honours_length_and_charset():
    key = bytes(range(KEY_BYTES))
    db = SecretSpec(name="db_password", version="v1", length=128, charset="hex")
    assert derive(key, db) == derive(key, db)
    assert len(derive(key, db)) == 128 and set(derive(key, db)) <= set(CHARSETS["hex"])
    # another version (a rotation), another name or another key: another value
    assert derive(key, db) != derive(key, SecretSpec("db_password", "v2", 128, "hex"))
    assert derive(key, db) != derive(key, SecretSpec("admin_password", "v1", 128, "hex"))
    assert derive(os.urandom(KEY_BYTES), db) != derive(key, db)
    special = SecretSpec(name="s", version="v1", length=4096, charset="special")
    value = derive(key, special)
    assert len(value) == 4096 and set(value) <= set(CHARSETS["special"])
    # rejection sampling keeps every character of the alphabet reachable, about evenly
    counts = [value.count(c) for c in CHARSETS["special"]]
    assert min(counts) > 0


def test_key_is_made_once_root_only_and_shared_by_every_app(tmp_path):
    state = str(tmp_path)
    first = SecretKey(state, "dbkeep")
    specs = [SecretSpec("db_password", "v1"), SecretSpec("smtp", "v1", generate=False)]
    values = first.values(specs)
    assert list(values) == ["db_password"]  # generate=false comes from the operator only
    keydir = tmp_path / "dbkeep" / "secrets"
    assert stat.S_IMODE(keydir.stat().st_mode) == 0o700
    assert stat.S_IMODE((keydir / "key").stat().st_mode) == 0o600
    assert sorted(os.listdir(keydir)) == ["key"]  # no temporary file left
    # another process (a cold run, then the canonical) gets the same values
    assert SecretKey(state, "dbkeep").values(specs) == values
    assert SecretKey(state, "other").values(specs) != values
    # a key made while another run made one keeps the first
    again = SecretKey(state, "dbkeep")
    again._new()
    assert again.values(specs) == values


def test_check_mode_never_writes_and_remove_takes_the_directory(tmp_path):
    key = SecretKey(str(tmp_path), "dbkeep", create=False)
    assert key.values([SecretSpec("db_password", "v1")]) == {}
    assert not (tmp_path / "dbkeep").exists()
    assert key.remove() is False
    SecretKey(str(tmp_path), "dbkeep").load()
    assert key.remove() is True and not (tmp_path / "dbkeep" / "secrets").exists()


def test_a_damaged_key_is_one_sentence(tmp_path):
    key = SecretKey(str(tmp_path), "dbkeep")
    key.load()
    with open(key.path, "wb") as handle:
        handle.write(b"short")
    with pytest.raises(StateError, match=r"has 5 bytes, not 32: .*state=absent"):
        key.load()
