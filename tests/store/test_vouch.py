"""What a signer that did not compute a version checks before it signs (the operator signing a
ModelDelta Job's publish): a consistent version is signed under its name; a version from
another parent, a name that points elsewhere, a missing object, an altered manifest or code
beside the weights is refused with nothing signed."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from deltaroll.checkpoint.aux_policy import AuxPolicy
from deltaroll.store import InconsistentVersionError, InvalidManifestError, Store
from deltaroll.store.signing import SigningKey, generate_key_pair, load_signing_key
from deltaroll.store.vouch import vouch_and_sign

MODEL = "tiny"


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    generate_key_pair(tmp_path / "operator.pem", tmp_path / "operator.pub")
    return load_signing_key(tmp_path / "operator.pem")


@pytest.fixture
def published(checkpoints: list[Path], tmp_path: Path) -> tuple[Store, str, str]:
    """A store with s0 (a root) and s1 (a delta from s0): (store, s0's id, s1's id)."""
    store = Store(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "cache")
    s0 = store.push(MODEL, checkpoints[0], name="s0").version
    s1 = store.push(MODEL, checkpoints[1], base=checkpoints[0], name="s1").version
    return store, s0, s1


def signatures(store: Store, version: str) -> list[Path]:
    return sorted((Path(store.location.location) / MODEL / "signatures" / version).glob("*.json"))


def vouch(store: Store, version: str, key: SigningKey, *, parent: str | None, name: str) -> None:
    vouch_and_sign(
        store.catalog, MODEL, version, key, parent=parent, name=name, origin="test:vouch"
    )


def test_a_consistent_version_is_signed_under_its_name(
    published: tuple[Store, str, str], key: SigningKey
) -> None:
    store, s0, s1 = published
    vouch(store, s1, key, parent=s0, name="s1")
    vouch(store, s0, key, parent=None, name="s0")  # a root: its anchor is what is checked
    signed = store.signed(MODEL, s1, [key.public], name="s1")
    assert (list(signed.statement.names), signed.statement.origin) == (["s1"], "test:vouch")
    assert signed.statement.store == store.catalog.backend.uri
    assert store.signed(MODEL, s0, [key.public], name="s0").statement.version == s0


def test_a_version_from_another_parent_or_under_a_moved_name_is_not_signed(
    published: tuple[Store, str, str], key: SigningKey
) -> None:
    store, s0, s1 = published
    with pytest.raises(InconsistentVersionError, match=f"published from {s0}, not from the parent"):
        vouch(store, s1, key, parent="c" * 32, name="s1")
    with pytest.raises(InconsistentVersionError, match="the name 's0' points at"):
        vouch(store, s1, key, parent=s0, name="s0")
    assert signatures(store, s1) == []


def test_a_missing_object_or_an_altered_manifest_is_not_signed(
    published: tuple[Store, str, str], key: SigningKey
) -> None:
    store, s0, s1 = published
    record = store.versions(MODEL)[s1].delta
    assert record is not None
    objects = Path(store.location.location) / MODEL / "objects"
    payload = objects / record.payload[0].digest
    kept = payload.read_bytes()
    payload.unlink()
    with pytest.raises(InconsistentVersionError, match="1 object\\(s\\) the store does not hold"):
        vouch(store, s1, key, parent=s0, name="s1")
    payload.write_bytes(kept)

    manifest = objects / record.manifest.digest
    manifest.write_bytes(manifest.read_bytes().replace(b'"', b" ", 1))  # a bucket writer's edit
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() != record.manifest.digest
    with pytest.raises(InvalidManifestError, match="does not match its record's digest"):
        vouch(store, s1, key, parent=s0, name="s1")
    assert signatures(store, s1) == []


def test_code_beside_the_weights_is_not_signed_even_when_its_publisher_allowed_it(
    published: tuple[Store, str, str], key: SigningKey, checkpoints: list[Path], tmp_path: Path
) -> None:
    store, s0, _ = published
    evil = tmp_path / "evil"
    shutil.copytree(checkpoints[2], evil)
    (evil / "modeling_evil.py").write_text("import os\nos.system('id')\n")
    allowed = AuxPolicy(extra=("modeling_*.py",))
    version = store.push(MODEL, evil, base=checkpoints[0], name="s2", aux_policy=allowed).version
    with pytest.raises(InconsistentVersionError, match="modeling_evil.py"):
        vouch(store, version, key, parent=s0, name="s2")
    assert signatures(store, version) == []
