"""``deltaroll operator run``: the Kopf operator, with exactly the flags the Helm chart passes.

    deltaroll operator run --liveness=http://0.0.0.0:8080/healthz --all-namespaces --standalone
    deltaroll operator run --namespace=ml --namespace=ml-staging --peering=deltaroll
    deltaroll operator run -A --standalone --policy=policy.yaml

Environment (set by the chart): DELTAROLL_WORKER_IMAGE (default image of worker Jobs),
DELTAROLL_AGENT_IMAGE, DELTAROLL_LOG_FORMAT (json|console), DELTAROLL_LOG_LEVEL,
DELTAROLL_METRICS_PORT (Prometheus metrics; unset: none), POD_NAME/POD_NAMESPACE (identity),
DELTAROLL_POLICY (the admin's policy file, as --policy; see :mod:`deltaroll.api.policy`),
DELTAROLL_SIGNING_KEY (the same as --signing-key: the chart's mounted signing-key Secret).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

operator_app = typer.Typer(
    name="operator", help="Run the Deltaroll operator (Kopf).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the ``operator`` command group."""
    app.add_typer(operator_app, name="operator")


@operator_app.command("run")
def run(
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Serve every namespace.")
    ] = False,
    namespaces: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Serve this namespace (repeatable)."),
    ] = None,
    standalone: Annotated[
        bool, typer.Option("--standalone", help="No peering: this is the only replica.")
    ] = False,
    peering: Annotated[
        str | None,
        typer.Option("--peering", help="Peering object name, so only one replica is active."),
    ] = None,
    liveness: Annotated[
        str | None,
        typer.Option(
            "--liveness", help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz."
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            envvar="DELTAROLL_POLICY",
            help="The admin's policy (YAML): which stores, images and ServiceAccounts each "
            "namespace may use. Unset: the built-in defaults (s3:// and hf:// stores only).",
        ),
    ] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            "--signing-key",
            envvar="DELTAROLL_SIGNING_KEY",
            help="Ed25519 private key (PEM) that signs what ModelDelta Jobs publish, after the "
            "operator checked it; without one, nothing is signed.",
        ),
    ] = None,
) -> None:
    """Reconcile ModelDeltas (their worker Jobs) and ModelDeployments (canary rollouts).

    Runs until stopped (SIGTERM/SIGINT).
    """
    from deltaroll.controllers.errors import OperatorConfigError
    from deltaroll.redact import hide_environment_endpoints

    hide_environment_endpoints()
    if all_namespaces == bool(namespaces):
        raise OperatorConfigError("pass either --all-namespaces or one or more --namespace=NS")
    if standalone and peering:
        raise OperatorConfigError("pass either --standalone or --peering=NAME, not both")

    if policy is not None:
        import os

        from deltaroll.api.policy import POLICY_ENV
        from deltaroll.controllers.policy import current_policy

        os.environ[POLICY_ENV] = str(policy.resolve())
        current_policy()  # parsed (once) here: a bad policy stops here, before Kopf starts
    from deltaroll.store.signing import load_signing_key

    key = load_signing_key(signing_key) if signing_key is not None else None  # before Kopf starts

    import kopf

    from deltaroll.controllers import register_handlers
    from deltaroll.controllers.modeldelta import signer
    from deltaroll.logs import configure_logging

    configure_logging()
    signer.configure(key)
    register_handlers()
    kopf.run(
        clusterwide=all_namespaces,
        namespaces=namespaces or (),
        standalone=standalone or None,
        peering_name=peering,
        liveness_endpoint=liveness,
    )
