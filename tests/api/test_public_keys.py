"""spec.verification.publicKeys: the PEM that `deltaroll keys generate` writes is accepted and
becomes exactly the inline key the agent parses; anything else is refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from api.test_models import BASE_DEPLOYMENT
from deltaroll.api import InvalidResourceError, ModelDeploymentSpec
from deltaroll.api.parse import parse_resource
from deltaroll.api.public_keys import ed25519_raw, verify_keys_value
from deltaroll.store.signing import generate_key_pair, load_public_key, parse_inline_key


def test_a_generated_public_key_becomes_the_inline_key_the_agent_reads(tmp_path: Path) -> None:
    pems = []
    for label in ("a", "b"):
        generate_key_pair(tmp_path / f"{label}.pem", tmp_path / f"{label}.pub")
        pems.append((tmp_path / f"{label}.pub").read_text())
    spec = ModelDeploymentSpec.model_validate(
        {**BASE_DEPLOYMENT, "verification": {"publicKeys": [pems[1], pems[0], pems[1]]}}
    )
    assert spec.verification is not None
    value = verify_keys_value(spec.verification.public_keys)
    keys = [load_public_key(tmp_path / f"{label}.pub") for label in ("a", "b")]
    expected = sorted(keys, key=lambda key: key.inline())
    assert value == ",".join(key.inline() for key in expected)  # sorted, no repeats
    assert [parse_inline_key(text).key_id for text in value.split(",")] == [
        key.key_id for key in expected
    ]


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.mark.parametrize(
    "text",
    [
        "ed25519:" + "A" * 43 + "=",  # the annotation's form, not PEM
        "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",  # too short
    ],
)
def test_what_is_not_an_ed25519_pem_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an Ed25519 public key in PEM"):
        ed25519_raw(text)


def test_a_modeldeployment_with_another_kind_of_key_names_the_field() -> None:
    body = {
        "kind": "ModelDeployment",
        "metadata": {"name": "signed", "namespace": "ml"},
        "spec": {**BASE_DEPLOYMENT, "verification": {"publicKeys": [_ec_pem()]}},
    }
    with pytest.raises(InvalidResourceError) as caught:
        parse_resource(body)
    message = str(caught.value)
    assert "spec.verification.publicKeys.0" in message
    assert "not an Ed25519 public key in PEM" in message and "deltaroll keys generate" in message
    with pytest.raises(InvalidResourceError, match="spec.verification.publicKeys"):
        parse_resource({**body, "spec": {**BASE_DEPLOYMENT, "verification": {"publicKeys": []}}})
