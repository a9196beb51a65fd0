"""Signed versions and what a pull loads, through the real ``deltaroll`` command: keys, signing
at push, ``--verify-key`` (repeatable) refusing unsigned, wrongly signed and renamed versions in
one ``error:`` line with nothing written; files beside the weights limited to data files; and
the relabelled-anchor attack (issue 16, finding 1) built from the real store format."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.manifest import decode_document, encode_document
from deltaroll.store import Store
from deltaroll.store.errors import SignatureError
from deltaroll.store.manifests import AnchorManifest, SignatureRecord, VersionStatement, dump, load
from deltaroll.store.pull import check_signed_plan
from deltaroll.store.signatures import SignedTarget
from deltaroll.store.signing import load_signing_key
from fixtures.cli import deltaroll_json, run_deltaroll

MODEL = "tiny"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"DELTAROLL_CACHE_DIR": str(tmp_path / "cache")}


@pytest.fixture
def keys(tmp_path: Path, env: dict[str, str]) -> dict[str, Path]:
    found = {}
    for label in ("a", "b"):
        private, public = tmp_path / f"{label}.pem", tmp_path / f"{label}.pub"
        made = deltaroll_json("keys", "generate", private, public, env=env)
        assert made["key_id"] == load_signing_key(private).public.key_id
        assert private.stat().st_mode & 0o077 == 0  # the private key is readable by its owner only
        found[label], found[f"{label}.pub"] = private, public
    return found


def refused(done_args: tuple[object, ...], env: dict[str, str], out: Path) -> str:
    """Run a command that must fail with one ``error:`` line and write nothing at ``out``."""
    done = run_deltaroll(*done_args, env=env)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not out.exists()
    return done.stderr


def test_push_signs_and_pull_accepts_only_what_an_accepted_key_signed(
    checkpoints: list[Path], tmp_path: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    store = f"file://{tmp_path / 'store'}"
    first = deltaroll_json(
        "push", store, MODEL, checkpoints[0], "--name", "s0", "--sign-key", keys["a"], env=env
    )
    assert first["signed_by"] == load_signing_key(keys["a"]).public.key_id
    deltaroll_json("push", store, MODEL, checkpoints[1], "--base", checkpoints[0], "--name", "s1",
                   env=env)  # fmt: skip
    out = tmp_path / "out"

    pulled = deltaroll_json("pull", store, MODEL, "s0", "-o", out, "--verify-key", keys["a.pub"],
                            env=env)  # fmt: skip
    assert pulled["version"] == first["version"]
    shutil.rmtree(out)

    message = refused(("pull", store, MODEL, "s1", "-o", out, "--verify-key", keys["a.pub"]), env,
                      out)  # fmt: skip
    assert "not signed by an accepted key" in message
    message = refused(("pull", store, MODEL, "s0", "-o", out, "--verify-key", keys["b.pub"]), env,
                      out)  # fmt: skip
    assert "not signed by an accepted key" in message
    message = refused(("pull", store, MODEL, "s0", "-o", out, "--verify-key", keys["a"]), env, out)
    assert "not an Ed25519 public key" in message

    # Rotation: s1 is signed by the new key only; either key is accepted.
    deltaroll_json("sign", store, MODEL, "s1", "--key", keys["b"], "--name", "s1", env=env)
    for ref in ("s0", "s1"):
        deltaroll_json("pull", store, MODEL, ref, "-o", out, "--verify-key", keys["a.pub"],
                       "--verify-key", keys["b.pub"], env=env)  # fmt: skip
        shutil.rmtree(out)

    # A bucket writer moves the name s1 to the older signed version (a rollback by name).
    Store(store).set_name(MODEL, "s1", first["version"], force=True)
    message = refused(("pull", store, MODEL, "s1", "-o", out, "--verify-key", keys["a.pub"]), env,
                      out)  # fmt: skip
    assert "does not name it" in message


def test_a_signed_digest_of_other_content_is_refused_before_anything_is_written(
    checkpoints: list[Path], tmp_path: Path, keys: dict[str, Path]
) -> None:
    store = Store(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "cache")
    first = store.push(MODEL, checkpoints[0])
    second = store.push(MODEL, checkpoints[1], base=checkpoints[0])
    key = load_signing_key(keys["a"])
    # A key holder's statement for the first version, but over the second's content.
    wrong = store.sign(MODEL, second.version, key).model_copy(update={"version": first.version})
    plan = store.plan(MODEL, first.version)
    store.pull(MODEL, first.version, tmp_path / "warm", keep_cache=True)  # objects in the cache
    with pytest.raises(SignatureError, match="makes other tensors or files"):
        check_signed_plan(SignedTarget(wrong, key.public.key_id), plan, store.cache)


def test_a_statement_edited_after_signing_does_not_verify(
    checkpoints: list[Path], tmp_path: Path, env: dict[str, str], keys: dict[str, Path]
) -> None:
    root = tmp_path / "store"
    store = Store(f"file://{root}", cache_dir=tmp_path / "cache")
    version = store.push(MODEL, checkpoints[0]).version
    key = load_signing_key(keys["a"])
    store.sign(MODEL, version, key)
    path = root / MODEL / "signatures" / version / f"{key.public.key_id}.json"
    record = load(SignatureRecord, path.read_bytes(), uri="", key="")
    statement = VersionStatement.model_validate_json(base64.b64decode(record.statement))
    edited = dump(statement.model_copy(update={"names": {"production": 1}}))
    path.write_bytes(
        dump(record.model_copy(update={"statement": base64.b64encode(edited).decode()}))
    )
    out = tmp_path / "out"
    message = refused(("pull", f"file://{root}", MODEL, version, "-o", out, "--verify-key",
                       keys["a.pub"]), env, out)  # fmt: skip
    assert "does not verify" in message


def test_code_and_auto_map_beside_the_weights_are_refused_at_push_and_at_apply(
    checkpoints: list[Path], tmp_path: Path, env: dict[str, str]
) -> None:
    store = f"file://{tmp_path / 'store'}"
    deltaroll_json("push", store, MODEL, checkpoints[0], env=env)
    evil = tmp_path / "evil"
    shutil.copytree(checkpoints[1], evil)
    (evil / "modeling_evil.py").write_text("import os\nos.system('id')\n")
    mapped = tmp_path / "mapped"
    shutil.copytree(checkpoints[1], mapped)
    config = json.loads((mapped / "config.json").read_text())
    (mapped / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "m.M"}}))
    nowhere = tmp_path / "nowhere"

    push = ("push", store, MODEL)
    message = refused((*push, evil, "--base", checkpoints[0]), env, nowhere)
    assert "'modeling_evil.py'" in message and "--allow-aux-file" in message
    message = refused((*push, mapped, "--base", checkpoints[0]), env, nowhere)
    assert "auto_map" in message and "--allow-auto-map" in message
    assert len(deltaroll_json("log", store, MODEL, env=env)["versions"]) == 1  # nothing published

    delta = tmp_path / "evil.delta"
    deltaroll_json("diff", checkpoints[0], evil, "-o", delta, env=env)
    out = tmp_path / "out"
    message = refused(("apply", checkpoints[0], delta, "-o", out), env, out)
    assert "'modeling_evil.py'" in message
    allowed = deltaroll_json("apply", checkpoints[0], delta, "-o", out, "--allow-aux-file",
                             "modeling_*.py", env=env)  # fmt: skip
    assert (out / "modeling_evil.py").exists() and allowed["to_version"]

    # A publisher that allowed it does not decide for the puller.
    deltaroll_json(*push, mapped, "--base", checkpoints[0], "--allow-auto-map", env=env)
    pulled = tmp_path / "pulled"
    last = deltaroll_json("log", store, MODEL, env=env)["versions"][-1]["version"]
    message = refused(("pull", store, MODEL, last, "-o", pulled), env, pulled)
    assert "auto_map" in message


def test_a_relabelled_anchor_is_refused(checkpoints: list[Path], tmp_path: Path) -> None:
    """Finding 1: the anchor of weights A relabelled as version B (the manifest's target id
    edited, its object digest and the anchor record recomputed) must not make a pull report B
    while the disk holds A."""
    root = tmp_path / "store"
    store = Store(f"file://{root}", cache_dir=tmp_path / "cache")
    a = store.push(MODEL, checkpoints[0]).version
    b = store.push(MODEL, checkpoints[1], base=checkpoints[0]).version
    model = root / MODEL
    record = load(AnchorManifest, (model / "anchors" / f"{a}.json").read_bytes(), uri="", key="")
    document = decode_document((model / "objects" / record.delta.manifest.digest).read_bytes(), "")
    relabelled = encode_document({**document, "target_version": b})
    digest = hashlib.sha256(relabelled).hexdigest()
    (model / "objects" / digest).write_bytes(relabelled)
    forged = record.delta.model_copy(
        update={"target_version": b, "manifest": record.delta.manifest.model_copy(
            update={"digest": digest, "size": len(relabelled)})}
    )  # fmt: skip
    (model / "anchors" / f"{b}.json").write_bytes(
        dump(AnchorManifest(model=MODEL, version=b, delta=forged, created_at=record.created_at))
    )
    assert store.plan(MODEL, b).steps[0].kind == "anchor"  # the forged anchor is the cheapest
    with pytest.raises(CorruptDeltaError, match="forged"):
        store.pull(MODEL, b, tmp_path / "out")
    assert not (tmp_path / "out").exists()
