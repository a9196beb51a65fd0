"""``kubectl deltaroll``: watch and steer ModelDeployment rollouts, like ``kubectl argo rollouts``.

    kubectl deltaroll status  NAME [-n NS] [--json]
    kubectl deltaroll promote NAME [--full]   end the current pause/analysis step (or all steps)
    kubectl deltaroll abort   NAME            every pod back to the stable version, Degraded
    kubectl deltaroll retry   NAME            clear an abort; run spec.version from step one
    kubectl deltaroll rollback NAME           the same as abort, recorded as a rollback

Every verb sets one annotation on the ModelDeployment (``deltaroll.dev/promote``, ``/abort``,
``/retry``); the operator acts on it, records the outcome in status and removes it. Nothing here
writes spec: spec.version belongs to git (Argo CD, Flux). So ``rollback`` cannot undo a commit;
like Argo Rollouts' abort it sends every pod back to ``status.stableVersion`` and keeps the
deployment Degraded until spec.version changes (revert the commit, or set it to the stable
version, which then needs no canary) or ``retry``. The cluster is the kubeconfig's current
context ($KUBECONFIG), and the namespace defaults to the context's.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from deltaroll.cli.errors import ClusterRequestError, ModelDeploymentNotFoundError, run_cli
from deltaroll.cli.output import JsonOpt, emit

GROUP, VERSION, PLURAL = "deltaroll.dev", "v1alpha1", "modeldeployments"

app = typer.Typer(
    name="kubectl-deltaroll",
    help="Watch and steer Deltaroll ModelDeployment rollouts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

NameArg = Annotated[str, typer.Argument(help="ModelDeployment name.")]
NamespaceOpt = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace; the current context's by default."),
]


def _api() -> tuple[Any, str]:
    """CustomObjectsApi for the current context, and the context's namespace."""
    import kubernetes

    try:
        kubernetes.config.load_kube_config()
        _, active = kubernetes.config.list_kube_config_contexts()
    except (kubernetes.config.ConfigException, FileNotFoundError) as exc:
        raise ClusterRequestError(
            f"no usable kubeconfig ({exc}); set KUBECONFIG or run `kubectl config use-context`"
        ) from None
    namespace = (active.get("context") or {}).get("namespace") or "default"
    return kubernetes.client.CustomObjectsApi(), namespace


def _call(what: str, name: str, namespace: str, fn: Any, *args: Any) -> Any:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn(*args)
    except ApiException as exc:
        if exc.status == 404:
            raise ModelDeploymentNotFoundError(
                f"modeldeployment {name} not found in namespace {namespace}; "
                f"`kubectl get modeldeployments -n {namespace}` lists them"
            ) from None
        raise ClusterRequestError(
            f"{what} {namespace}/{name} failed: {exc.status} {exc.reason}"
        ) from None
    except HTTPError as exc:
        raise ClusterRequestError(
            f"{what} {namespace}/{name}: cluster unreachable ({exc})"
        ) from None


def _get(api: Any, name: str, namespace: str) -> dict[str, Any]:
    return dict(
        _call(
            "reading",
            name,
            namespace,
            api.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
        )
    )


def _request(name: str, namespace: str | None, annotation: str, value: str, as_json: bool) -> None:
    """Set one request annotation, as Argo Rollouts' verbs patch their Rollout."""
    api, default_namespace = _api()
    namespace = namespace or default_namespace
    _get(api, name, namespace)  # a clear "not found" before patching
    patch = {"metadata": {"annotations": {annotation: value}}}
    _call(
        "annotating",
        name,
        namespace,
        api.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        patch,
    )
    result = {"name": name, "namespace": namespace, "annotation": annotation, "value": value}
    emit(result, as_json=as_json, human=f"modeldeployment {namespace}/{name}: {annotation}={value}")


@app.command()
def promote(
    name: NameArg,
    namespace: NamespaceOpt = None,
    full: Annotated[
        bool, typer.Option("--full", help="Skip every remaining step and analysis.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """End the current pause or analysis step (or, with --full, all remaining steps)."""
    from deltaroll.api.annotations import PROMOTE

    _request(name, namespace, PROMOTE, "full" if full else "step", as_json)


@app.command()
def abort(name: NameArg, namespace: NamespaceOpt = None, as_json: JsonOpt = False) -> None:
    """Move every pod back to the stable version; Degraded until spec.version changes or retry."""
    from deltaroll.api.annotations import ABORT
    from deltaroll.api.conditions import now_rfc3339

    _request(name, namespace, ABORT, now_rfc3339(), as_json)


@app.command()
def retry(name: NameArg, namespace: NamespaceOpt = None, as_json: JsonOpt = False) -> None:
    """Clear an abort and roll spec.version out again from the first step."""
    from deltaroll.api.annotations import RETRY
    from deltaroll.api.conditions import now_rfc3339

    _request(name, namespace, RETRY, now_rfc3339(), as_json)


@app.command()
def rollback(name: NameArg, namespace: NamespaceOpt = None, as_json: JsonOpt = False) -> None:
    """Send every pod back to status.stableVersion now (an abort recorded as RolledBack).

    spec.version stays as git has it: revert the commit (or set spec.version to the stable
    version) to make it permanent; the deployment stays Degraded until then.
    """
    from deltaroll.api.annotations import ABORT, ROLLBACK

    _request(name, namespace, ABORT, ROLLBACK, as_json)


@app.command()
def status(name: NameArg, namespace: NamespaceOpt = None, as_json: JsonOpt = False) -> None:
    """Where the rollout stands: phase, versions, step, pods, analysis and conditions."""
    api, default_namespace = _api()
    namespace = namespace or default_namespace
    body = _get(api, name, namespace)
    spec, state = body.get("spec") or {}, body.get("status") or {}
    steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
    summary = {
        "name": name,
        "namespace": namespace,
        "specVersion": spec.get("version"),
        "phase": state.get("phase"),
        "message": state.get("message"),
        "stableVersion": state.get("stableVersion"),
        "canaryVersion": state.get("canaryVersion"),
        "currentStepIndex": state.get("currentStepIndex"),
        "steps": len(steps),
        "totalPods": state.get("totalPods", 0),
        "updatedPods": state.get("updatedPods", 0),
        "readyPods": state.get("readyPods", 0),
        "abort": state.get("abort", False),
        "analysisResults": state.get("analysisResults") or [],
        "conditions": state.get("conditions") or [],
        "upToDate": state.get("observedGeneration") == body["metadata"].get("generation"),
    }
    emit(summary, as_json=as_json, human=_human(summary))


def _human(s: dict[str, Any]) -> str:
    step = "-" if s["currentStepIndex"] is None else f"{s['currentStepIndex']}/{s['steps']}"
    lines = [
        f"Name:         {s['namespace']}/{s['name']}",
        f"Status:       {s['phase'] or 'Unknown'}"
        + ("" if s["upToDate"] else " (not observed yet)"),
        f"Message:      {s['message'] or ''}",
        f"Spec version: {s['specVersion']}",
        f"Stable:       {s['stableVersion'] or '-'}",
        f"Canary:       {s['canaryVersion'] or '-'}",
        f"Step:         {step}",
        f"Pods:         {s['totalPods']} total, {s['updatedPods']} updated, {s['readyPods']} ready",
    ]
    for run in s["analysisResults"]:
        where = "background" if run.get("stepIndex") is None else f"step {run['stepIndex']}"
        lines.append(
            f"Analysis:     {run.get('templateName')} ({where}) {run.get('phase')}: "
            f"{run.get('successful', 0)} ok, {run.get('failed', 0)} failed, "
            f"{run.get('errors', 0)} errors, last {run.get('lastValue', '-')}"
        )
    for condition in s["conditions"]:
        lines.append(
            f"Condition:    {condition.get('type')}={condition.get('status')} "
            f"({condition.get('reason')})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the plugin."""
    run_cli(app, argv)


if __name__ == "__main__":
    main()
