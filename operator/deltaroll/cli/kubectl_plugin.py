"""``kubectl deltaroll``: watch and steer ModelDeployment rollouts, like ``kubectl argo rollouts``.

    kubectl deltaroll status  NAME [-n NS] [--json] [-w]   the rollout and every pod, live with -w
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

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from deltaroll.cli.errors import ClusterRequestError, ModelDeploymentNotFoundError, run_cli
from deltaroll.cli.output import JsonOpt, emit

GROUP, VERSION, PLURAL = "deltaroll.dev", "v1alpha1", "modeldeployments"
CLEAR_SCREEN = "\x1b[H\x1b[2J"

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


def _call(what: str, name: str, namespace: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn(*args, **kwargs)
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


WatchOpt = Annotated[
    bool,
    typer.Option(
        "--watch", "-w", help="Show it again on every change (the watch API); Ctrl-C ends it."
    ),
]


@app.command()
def status(
    name: NameArg, namespace: NamespaceOpt = None, watch: WatchOpt = False, as_json: JsonOpt = False
) -> None:
    """Where the rollout stands: phase, versions, step, analysis, conditions and every pod."""
    import kubernetes

    from deltaroll.cli.rollout_view import render, summarize

    api, default_namespace = _api()
    namespace = namespace or default_namespace
    body = _get(api, name, namespace)
    core = kubernetes.client.CoreV1Api()
    selector = _pod_selector(body)
    if not watch:
        pods = [] if selector is None else _list_pods(core, name, namespace, selector)
        summary = summarize(body, pods, datetime.now(UTC))
        emit(summary, as_json=as_json, human=render(summary))
        return
    from deltaroll.cli.follow import follow

    _take_ctrl_c()
    shown = None
    try:
        for body, pods in follow(api, core, namespace, name, selector):
            summary = summarize(body, pods, datetime.now(UTC))
            text = json.dumps(summary, sort_keys=True, default=str) if as_json else render(summary)
            if text != shown:
                _show(text, as_json=as_json)
                shown = text
    except KeyboardInterrupt:
        return  # the way out of --watch, not an error


def _take_ctrl_c() -> None:
    """Ctrl-C ends ``--watch`` even when the parent left SIGINT ignored or blocked (a test
    runner's worker, a script's background job): kubectl's own ``--watch`` takes it the same
    way (Go's signal.Notify installs a handler over an inherited ignore)."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _pod_selector(body: dict[str, Any]) -> str | None:
    """spec.selector as a labelSelector query; None when it does not parse (no pods shown)."""
    from pydantic import ValidationError

    from deltaroll.api.modeldeployment import LabelSelector
    from deltaroll.controllers.modeldeployment.writes import label_selector

    try:
        return label_selector(LabelSelector.model_validate((body.get("spec") or {})["selector"]))
    except (KeyError, ValidationError):
        return None


def _list_pods(core: Any, name: str, namespace: str, selector: str) -> list[dict[str, Any]]:
    from deltaroll.api.parse import list_items

    listed = _call(
        "listing the pods of",
        name,
        namespace,
        core.list_namespaced_pod,
        namespace,
        label_selector=selector,
        _preload_content=False,
    )
    return list_items(listed.data)


def _show(text: str, *, as_json: bool) -> None:
    """One rendering: on a terminal in place of the last, else after it (a JSON line each)."""
    if as_json:
        sys.stdout.write(text + "\n")
    elif sys.stdout.isatty():
        sys.stdout.write(CLEAR_SCREEN + text + "\n")
    else:
        sys.stdout.write(text + "\n\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """Run the plugin."""
    run_cli(app, argv)


if __name__ == "__main__":
    main()
