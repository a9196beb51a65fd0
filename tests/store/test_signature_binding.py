"""What a signature binds beyond the content (issue 16, review findings a and b), through the real
``deltaroll`` command: a local delta directory carries its own signature and ``apply
--verify-key`` refuses before touching a weight; a statement names the store it was signed in,
so a copy planted in another store does not verify there; a name carries a sequence number, so a
bucket writer cannot move it back to a version once signed under it."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from deltaroll.store import Store
from deltaroll.store.errors import SignatureError
from deltaroll.store.manifests import SignatureRecord, dump
from deltaroll.store.signing import load_signing_key
from deltaroll.store.vouch import vouch_and_sign
from fixtures.cli import deltaroll_json, run_deltaroll
from store.test_signatures import refused

MODEL = "tiny"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"DELTAROLL_CACHE_DIR": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "st")}


@pytest.fixture
def keys(tmp_path: Path, env: dict[str, str]) -> dict[str, Path]:
    found = {}
    for label in ("a", "b"):
        private, public = tmp_path / f"{label}.pem", tmp_path / f"{label}.pub"
        deltaroll_json("keys", "generate", private, public, env=env)
        found[label], found[f"{label}.pub"] = private, public
    return found


def file_digests(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.name.startswith(".")  # the checkpoint's own state record
    }


def test_apply_verify_key_refuses_a_local_delta_unless_an_accepted_key_signed_its_result(
    checkpoints: list[Path], tmp_path: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    delta, other = tmp_path / "d01", tmp_path / "d12"
    deltaroll_json("diff", checkpoints[0], checkpoints[1], "-o", delta, env=env)
    deltaroll_json("diff", checkpoints[1], checkpoints[2], "-o", other, env=env)
    weights = tmp_path / "weights"
    shutil.copytree(checkpoints[0], weights)
    before = file_digests(weights)
    out = tmp_path / "out"
    apply_args = ("apply", weights, delta, "-o", out, "--verify-key", keys["a.pub"])

    assert "no signature by an accepted key" in refused(apply_args, env, out)
    done = run_deltaroll("apply", weights, delta, "--in-place", "--verify-key", keys["a.pub"],
                         env=env)  # fmt: skip
    assert done.returncode != 0 and done.stderr.startswith("error: ")
    assert file_digests(weights) == before  # refused before any weight was touched

    signed = deltaroll_json("sign", delta, "--key", keys["a"], env=env)
    assert signed["key_id"] == load_signing_key(keys["a"]).public.key_id
    # Another key's signature is not enough.
    assert "no signature by an accepted key" in refused(
        ("apply", weights, delta, "-o", out, "--verify-key", keys["b.pub"]), env, out
    )
    # A signature copied from another delta vouches for other content.
    deltaroll_json("sign", other, "--key", keys["a"], env=env)
    record = f"signatures/{load_signing_key(keys['a']).public.key_id}.json"
    saved = (delta / record).read_bytes()
    (delta / record).write_bytes((other / record).read_bytes())
    assert "another version" in refused(apply_args, env, out)
    # A record that was edited after signing.
    (delta / record).write_bytes(saved.replace(b'"signature":"', b'"signature":"AAAA'))
    assert "does not verify" in refused(apply_args, env, out)
    (delta / record).write_bytes(saved)

    applied = deltaroll_json(*apply_args, env=env)
    assert applied["to_version"] == deltaroll_json("inspect", delta, env=env)["target_version"]
    deltaroll_json("apply", weights, delta, "--in-place", "--verify-key", keys["a.pub"], env=env)
    assert file_digests(weights) == file_digests(out)
    # Reversed, the result is the delta's base, which this signature does not cover.
    message = refused(("apply", weights, delta, "-o", tmp_path / "back", "--reverse",
                       "--verify-key", keys["a.pub"]), env, tmp_path / "back")  # fmt: skip
    assert "another version" in message


def test_a_signed_version_planted_in_another_store_does_not_verify_there(
    checkpoints: list[Path], tmp_path: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    deltaroll_json("push", f"file://{theirs}", MODEL, checkpoints[0], "--name", "prod",
                   "--sign-key", keys["a"], env=env)  # fmt: skip
    # Someone able to write our store copies the other store's model, signatures and all.
    shutil.copytree(theirs, ours)
    out = tmp_path / "out"
    message = refused(("pull", f"file://{ours}", MODEL, "prod", "-o", out, "--verify-key",
                       keys["a.pub"]), env, out)  # fmt: skip
    assert f"signed for file://{theirs}" in message
    deltaroll_json("pull", f"file://{theirs}", MODEL, "prod", "-o", out, "--verify-key",
                   keys["a.pub"], env=env)  # fmt: skip


def test_the_operators_signature_names_the_namespace_it_was_made_for(
    checkpoints: list[Path], tmp_path: Path, keys: dict[str, Path]
) -> None:
    store = Store(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "cache")
    version = store.push(MODEL, checkpoints[0], name="prod").version
    key = load_signing_key(keys["a"])
    vouch_and_sign(store.catalog, MODEL, version, key, parent=None, name="prod",
                   origin="operator:modeldelta/team-x/prod", namespace="team-x")  # fmt: skip
    assert store.signed(MODEL, version, [key.public], name="prod", namespace="team-x")
    with pytest.raises(SignatureError, match="namespace 'team-x'.*not 'team-y'"):
        store.signed(MODEL, version, [key.public], name="prod", namespace="team-y")


def test_a_name_cannot_be_moved_back_to_a_version_signed_under_it_before(
    checkpoints: list[Path], tmp_path: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    store = f"file://{tmp_path / 'store'}"
    pull = ("pull", store, MODEL, "prod", "--verify-key", keys["a.pub"])
    v0 = deltaroll_json("push", store, MODEL, checkpoints[0], "--name", "prod", "--sign-key",
                        keys["a"], env=env)["version"]  # fmt: skip
    deltaroll_json(*pull, "-o", tmp_path / "p0", env=env)
    v1 = deltaroll_json("push", store, MODEL, checkpoints[1], "--base", checkpoints[0],
                        "--name", "prod", "--force-name", "--sign-key", keys["a"],
                        env=env)["version"]  # fmt: skip
    assert deltaroll_json(*pull, "-o", tmp_path / "p1", env=env)["version"] == v1

    # A bucket writer points the name back at v0, whose signature names it (an older sequence).
    Store(store).set_name(MODEL, "prod", v0, force=True)
    out = tmp_path / "out"
    message = refused((*pull, "-o", out), env, out)
    assert "was moved back" in message
    # The publisher means it: signing v0 under the name again gives it a newer sequence.
    deltaroll_json("sign", store, MODEL, v0, "--key", keys["a"], "--name", "prod", env=env)
    assert deltaroll_json(*pull, "-o", out, env=env)["version"] == v0


def test_gc_deletes_the_signatures_of_the_versions_it_deletes(
    checkpoints: list[Path], tmp_path: Path, keys: dict[str, Path]
) -> None:
    """On main gc left ``signatures/<version>/`` behind: a version id published again later
    (the same content) would have come back signed without anyone signing it."""
    root = tmp_path / "store"
    store = Store(f"file://{root}", cache_dir=tmp_path / "cache")
    key = load_signing_key(keys["a"])
    v0 = store.push(MODEL, checkpoints[0], anchor=True).version
    v1 = store.push(MODEL, checkpoints[1], base=checkpoints[0], anchor=True).version
    for version in (v0, v1):
        store.sign(MODEL, version, key)
    signatures = root / MODEL / "signatures"
    result = store.gc(MODEL, [v1], grace=timedelta(0))
    assert result.deleted_versions == [v0], result
    assert sorted(p.parent.name for p in signatures.glob("*/*.json")) == [v1]
    assert store.signed(MODEL, v1, [key.public]).statement.version == v1


def test_a_statement_signed_by_an_older_deltaroll_asks_to_be_signed_again(
    checkpoints: list[Path], tmp_path: Path, keys: dict[str, Path]
) -> None:
    """A v1 statement binds no store and no name sequence: refused, saying what to do, and
    signing it again is accepted."""
    root = tmp_path / "store"
    store = Store(f"file://{root}", cache_dir=tmp_path / "cache")
    version = store.push(MODEL, checkpoints[0]).version
    key = load_signing_key(keys["a"])
    digest = store.sign(MODEL, version, key).digest
    payload = json.dumps({"schema": "deltaroll.signed-version/v1", "model": MODEL,
                          "version": version, "digest": digest, "names": []}).encode()  # fmt: skip
    record = SignatureRecord(
        key_id=key.public.key_id,
        statement=base64.b64encode(payload).decode(),
        signature=base64.b64encode(key.sign(b"deltaroll.signed-version/v1\0" + payload)).decode(),
    )
    path = root / MODEL / "signatures" / version / f"{key.public.key_id}.json"
    path.write_bytes(dump(record))
    with pytest.raises(SignatureError, match="older Deltaroll.*deltaroll sign"):
        store.signed(MODEL, version, [key.public])
    store.sign(MODEL, version, key)
    assert store.signed(MODEL, version, [key.public]).statement.store == f"file://{root}"


def test_a_key_whose_statement_names_another_store_gives_way_to_the_next_accepted_key(
    checkpoints: list[Path], tmp_path: Path, keys: dict[str, Path]
) -> None:
    """Two accepted keys (rotation): key a's statement was copied in from another store, key b
    signed the version here. The version is signed for this store, so it verifies (on main the
    first key's binding error ended the search); with only key a it is refused, by name."""
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    a, b = load_signing_key(keys["a"]), load_signing_key(keys["b"])
    their_store = Store(f"file://{theirs}", cache_dir=tmp_path / "cache")
    version = their_store.push(MODEL, checkpoints[0], name="prod").version
    their_store.sign(MODEL, version, a, names=["prod"])
    shutil.copytree(theirs, ours)
    our_store = Store(f"file://{ours}", cache_dir=tmp_path / "cache")
    our_store.sign(MODEL, version, b, names=["prod"])

    for trusted in ([a.public, b.public], [b.public, a.public]):
        found = our_store.signed(MODEL, version, trusted, name="prod")
        assert (found.key_id, found.statement.store) == (b.public.key_id, f"file://{ours}")
    with pytest.raises(SignatureError, match=f"signed for file://{theirs}, not for this store"):
        our_store.signed(MODEL, version, [a.public], name="prod")
