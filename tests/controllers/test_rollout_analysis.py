"""Canary analysis: run scheduling, CEL verdicts, and the providers against real HTTP servers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from controllers.rollout_world import T0
from deltaroll.api.modeldeployment import EngineSpec, HttpProbe, MetricTemplate
from deltaroll.api.policy import NamespacePolicy
from deltaroll.controllers.analysis import http_probe, prometheus
from deltaroll.controllers.analysis.endpoints import engine_url
from deltaroll.controllers.analysis.errors import ConditionError, MeasurementError
from deltaroll.controllers.analysis.job import analysis_job_name, build_analysis_job, job_outcome
from deltaroll.controllers.analysis.measure import Context, take
from deltaroll.controllers.analysis.runs import Measurement, is_due, next_due, record, start_run
from deltaroll.controllers.analysis.verdict import judge


def template(**fields: Any) -> MetricTemplate:
    body: dict[str, Any] = {"name": "loss", "provider": {"http": {}}}
    body.update(fields)
    if "successCondition" not in body and "failureCondition" not in body:
        body["successCondition"] = "result < 1.0"
    return MetricTemplate.model_validate(body)


# ---------------------------------------------------------------- runs


def test_measurements_are_due_after_the_initial_delay_then_every_interval() -> None:
    spec = template(interval="30s", initialDelay="1m", count=3)
    run = start_run("loss", step_index=2, version="v2", now=T0)
    assert not is_due(run, spec, T0 + timedelta(seconds=59))
    assert is_due(run, spec, T0 + timedelta(seconds=60))
    run = record(run, spec, Measurement("Successful", "0.5"), T0 + timedelta(seconds=60))
    assert next_due(run, spec) == T0 + timedelta(seconds=90)
    run = record(run, spec, Measurement("Successful", "0.5"), T0 + timedelta(seconds=90))
    assert run.phase == "Running"
    run = record(run, spec, Measurement("Successful", "0.4"), T0 + timedelta(seconds=120))
    assert (run.phase, run.successful, run.last_value) == ("Successful", 3, "0.4")
    assert run.finished_at is not None and next_due(run, spec) is None


def test_one_failure_more_than_the_limit_fails_the_run() -> None:
    spec = template(count=5, failureLimit=1)
    run = start_run("loss", step_index=0, version="v2", now=T0)
    run = record(run, spec, Measurement("Failed", "3.0", "value 3"), T0)
    assert run.phase == "Running"
    run = record(run, spec, Measurement("Failed", "4.0", "value 4"), T0)
    assert run.phase == "Failed" and run.failed == 2
    assert "failureLimit 1" in (run.message or "")


def test_errors_beyond_the_limit_end_the_run_as_error() -> None:
    spec = template(count=10, consecutiveErrorLimit=1)
    run = start_run("loss", step_index=0, version="v2", now=T0)
    run = record(run, spec, Measurement("Error", message="connection refused"), T0)
    assert run.phase == "Running"
    run = record(run, spec, Measurement("Error", message="connection refused"), T0)
    assert run.phase == "Error" and "connection refused" in (run.message or "")


def test_a_taken_measurement_resets_the_consecutive_error_count() -> None:
    """Error, success, error, error with limit 2: three errors in all, but never three in a row."""
    spec = template(count=10, consecutiveErrorLimit=2, failureLimit=5)
    run = start_run("loss", step_index=0, version="v2", now=T0)
    run = record(run, spec, Measurement("Error", message="connection refused"), T0)
    run = record(run, spec, Measurement("Successful", "0.5"), T0)
    assert run.consecutive_errors == 0
    run = record(run, spec, Measurement("Error", message="connection refused"), T0)
    run = record(run, spec, Measurement("Failed", "3.0"), T0)  # a failure is a taken one too
    assert run.consecutive_errors == 0
    run = record(run, spec, Measurement("Error", message="connection refused"), T0)
    run = record(run, spec, Measurement("Error", message="connection refused"), T0)
    assert (run.phase, run.errors, run.consecutive_errors) == ("Running", 4, 2)


def test_consecutive_errors_beyond_the_limit_end_the_run_as_error() -> None:
    spec = template(count=10, consecutiveErrorLimit=2)
    run = start_run("loss", step_index=0, version="v2", now=T0)
    run = record(run, spec, Measurement("Successful", "0.5"), T0)
    for _ in range(2):
        run = record(run, spec, Measurement("Error", message="connection refused"), T0)
        assert run.phase == "Running"
    run = record(run, spec, Measurement("Error", message="connection refused"), T0)
    assert (run.phase, run.errors, run.consecutive_errors) == ("Error", 3, 3)
    assert "3 measurement(s) in a row" in (run.message or "")
    assert "consecutiveErrorLimit 2" in (run.message or "")


def test_the_consecutive_error_count_survives_a_restart_through_the_status() -> None:
    """The count lives in status (camelCase on the wire), so a restarted operator keeps it."""
    spec = template(count=10, consecutiveErrorLimit=1)
    run = start_run("loss", step_index=0, version="v2", now=T0)
    run = record(run, spec, Measurement("Error", message="timeout"), T0)
    wire = run.model_dump(by_alias=True, exclude_none=True)
    assert wire["consecutiveErrors"] == 1
    restored = type(run).model_validate(wire)
    restored = record(restored, spec, Measurement("Error", message="timeout"), T0)
    assert restored.phase == "Error"


def test_an_inconclusive_measurement_ends_the_run_inconclusive() -> None:
    spec = template(successCondition="result < 1.0", failureCondition="result > 2.0", count=3)
    run = start_run("loss", step_index=0, version="v2", now=T0)
    run = record(run, spec, Measurement("Inconclusive", "1.5"), T0)
    assert run.phase == "Inconclusive"


# ---------------------------------------------------------------- verdicts (CEL)


@pytest.mark.parametrize(
    ("success", "failure", "value", "baseline", "verdict"),
    [
        ("result <= baseline * 1.05", None, 2.0, 2.0, "Successful"),
        ("result <= baseline * 1.05", None, 2.2, 2.0, "Failed"),
        (None, "result > 4.0", 3.0, None, "Successful"),
        (None, "result > 4.0", 5.0, None, "Failed"),
        ("result < 1.0", "result > 2.0", 1.5, None, "Inconclusive"),
        ("result < 3.0", "result > 2.0", 2.5, None, "Failed"),  # failure wins
    ],
)
def test_conditions_judge_like_argo_rollouts(
    success: str | None, failure: str | None, value: float, baseline: float | None, verdict: str
) -> None:
    fields = {k: v for k, v in (("successCondition", success), ("failureCondition", failure)) if v}
    assert judge(template(**fields), value, baseline) == verdict


def test_a_bad_expression_is_a_named_error() -> None:
    with pytest.raises(ConditionError, match="not valid CEL"):
        judge(template(successCondition="result <"), 1.0)
    with pytest.raises(ConditionError, match="no stable pod"):
        judge(template(successCondition="result <= baseline"), 1.0, None)
    with pytest.raises(ConditionError, match="true or false"):
        judge(template(successCondition="result + 1.0"), 1.0)


# ---------------------------------------------------------------- endpoints


def pod(name: str, ip: str | None = "10.0.0.7", **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "containers": [{"name": "engine", "ports": [{"name": "http", "containerPort": 8000}]}]
        },
        "status": {"podIP": ip} if ip else {},
    }


def test_engine_url_uses_the_pod_ip_and_port_or_the_sandbox_mapping() -> None:
    engine = EngineSpec(kind="reference", port=8000)
    assert engine_url(pod("a"), engine) == "http://10.0.0.7:8000"
    named = EngineSpec(kind="reference", port=9, port_name="http")
    assert engine_url(pod("a"), named) == "http://10.0.0.7:8000"
    mapped = pod(
        "a", "127.0.0.1", **{"sandbox.deltaroll.dev/ports": '{"8000": 41234, "http": 41234}'}
    )
    assert engine_url(mapped, engine) == "http://127.0.0.1:41234"
    with pytest.raises(MeasurementError, match="no IP"):
        engine_url(pod("a", None), engine)
    with pytest.raises(MeasurementError, match="no containerPort named 'grpc'"):
        engine_url(pod("a"), EngineSpec(kind="reference", port_name="grpc"))


# ---------------------------------------------------------------- HTTP servers


Handler = Callable[[str, str, bytes], tuple[int, Any]]


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], tuple[str, list[tuple[str, str, bytes]]]]]:
    """Start local HTTP servers answering with ``handler(method, path, body)``."""
    servers: list[ThreadingHTTPServer] = []

    def start(handler: Handler) -> tuple[str, list[tuple[str, str, bytes]]]:
        seen: list[tuple[str, str, bytes]] = []

        class Answer(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                seen.append((self.command, self.path, body))
                status, reply = handler(self.command, self.path, body)
                raw = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def eval_engine(loss: float) -> Handler:
    """Answers POST /eval like the reference engine: {"loss": ..., "tokens": ...}."""

    def handler(method: str, path: str, body: bytes) -> tuple[int, Any]:
        if (method, path) != ("POST", "/eval") or "texts" not in json.loads(body):
            return 404, {"detail": "not found"}
        return 200, {"loss": loss, "tokens": 12}

    return handler


def test_http_probe_compares_canary_engines_with_stable_ones(serve: Any) -> None:
    canary_a, seen = serve(eval_engine(2.0))
    canary_b, _ = serve(eval_engine(3.0))
    stable, _ = serve(eval_engine(2.4))
    probe = HttpProbe.model_validate({"body": '{"texts": ["The capital of France is"]}'})
    result = http_probe.measure([canary_a, canary_b], [stable], probe)
    assert (result.result, result.baseline) == (2.5, 2.4)
    assert seen == [("POST", "/eval", b'{"texts": ["The capital of France is"]}')]
    spec = template(
        provider={"http": probe.to_wire()}, successCondition="result <= baseline * 1.05"
    )
    assert judge(spec, result.result, result.baseline) == "Successful"


def test_http_probe_errors_name_the_endpoint(serve: Any) -> None:
    broken, _ = serve(lambda *_: (500, {"detail": "CUDA out of memory"}))
    no_number, _ = serve(lambda *_: (200, {"loss": "n/a"}))
    probe = HttpProbe.model_validate({"body": "{}"})
    with pytest.raises(MeasurementError, match="answered 500: .*CUDA out of memory"):
        http_probe.ask(broken, probe)
    with pytest.raises(MeasurementError, match=r"single number at \$.loss"):
        http_probe.ask(no_number, probe)
    with pytest.raises(MeasurementError, match="failed"):
        http_probe.ask("http://127.0.0.1:9", probe)
    with pytest.raises(MeasurementError, match="no canary pod"):
        http_probe.measure([], [broken], probe)


def test_take_turns_pods_into_a_judged_measurement(serve: Any) -> None:
    canary, _ = serve(eval_engine(9.5))
    stable, _ = serve(eval_engine(2.0))

    def sandbox_pod(url: str) -> dict[str, Any]:
        port = urlsplit(url).port
        return pod("p", "127.0.0.1", **{"sandbox.deltaroll.dev/ports": json.dumps({"8000": port})})

    spec = template(
        provider={"http": {"body": '{"texts": ["x"]}'}},
        successCondition="result <= baseline * 1.05",
    )
    run = start_run("loss", step_index=2, version="v3", now=T0)
    context = Context(
        engine=EngineSpec(kind="reference"),
        canary_version="v3",
        stable_version="v2",
        canary_pods=[sandbox_pod(canary)],
        stable_pods=[sandbox_pod(stable)],
    )
    measured = take(spec, run, context)
    assert measured == Measurement("Failed", "9.5", "value 9.5 (baseline 2)")
    nobody_yet = Context(
        engine=EngineSpec(kind="reference"), canary_version="v3", stable_version="v2",
        stable_pods=[sandbox_pod(stable)],
    )  # fmt: skip
    assert take(spec, run, nobody_yet) is None  # the canary is still swapping: not an error
    unreachable = Context(
        engine=EngineSpec(kind="reference"),
        canary_version="v3",
        stable_version="v2",
        canary_pods=[pod("p", "127.0.0.1")],
    )
    errored = take(spec.model_copy(update={"provider": spec.provider}), run, unreachable)
    assert errored is not None and errored.verdict == "Error"


def test_an_http_probe_calls_no_engine_the_admins_http_targets_leave_out(serve: Any) -> None:
    """SSRF: the probe's targets come from pods a tenant controls (their IPs and the sandbox's
    port annotation); an address outside ``httpTargets`` is an Error, and gets no request."""
    canary, seen = serve(eval_engine(2.0))
    port = urlsplit(canary).port
    spec = template(provider={"http": {"body": '{"texts": ["x"]}'}}, successCondition="true")
    run = start_run("loss", step_index=2, version="v3", now=T0)
    ports = {"sandbox.deltaroll.dev/ports": json.dumps({"8000": port})}
    context = Context(
        engine=EngineSpec(kind="reference"),
        canary_version="v3",
        stable_version="v2",
        canary_pods=[pod("p", "127.0.0.1", **ports)],
        policy=NamespacePolicy(http_targets=["http://10.20."]),
    )
    measured = take(spec, run, context)
    assert measured is not None and measured.verdict == "Error"
    assert f"HTTP analysis target http://127.0.0.1:{port} is not allowed" in measured.message
    assert "allowed: http://10.20." in measured.message and seen == []


def prometheus_server(result: dict[str, Any]) -> Handler:
    def handler(method: str, path: str, _: bytes) -> tuple[int, Any]:
        url = urlsplit(path)
        if method != "GET" or url.path != "/api/v1/query":
            return 404, {"status": "error", "error": "not found"}
        query = parse_qs(url.query)["query"][0]
        if "syntax error" in query:
            return 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
        return 200, {"status": "success", "data": result}

    return handler


def test_prometheus_instant_query_scalar_and_single_sample_vector(serve: Any) -> None:
    address, seen = serve(prometheus_server({"resultType": "scalar", "result": [1.7e9, "0.02"]}))
    spec = template(
        provider={
            "prometheus": {
                "address": address,
                "query": 'rate(errors{version="{{canaryVersion}}"}[5m])',
            }
        }
    )
    assert prometheus.measure(spec.provider.prometheus, canary="v3", stable="v2") == 0.02  # type: ignore[arg-type]
    assert parse_qs(urlsplit(seen[0][1]).query)["query"] == ['rate(errors{version="v3"}[5m])']
    vector, _ = serve(
        prometheus_server(
            {"resultType": "vector", "result": [{"metric": {"pod": "a"}, "value": [1.7e9, "3.5"]}]}
        )
    )
    query = spec.provider.prometheus.model_copy(update={"address": vector})  # type: ignore[union-attr]
    assert prometheus.measure(query, canary="v3", stable="v2") == 3.5


def test_prometheus_answers_that_are_not_one_number_are_errors(serve: Any) -> None:
    empty, _ = serve(prometheus_server({"resultType": "vector", "result": []}))
    nan, _ = serve(prometheus_server({"resultType": "scalar", "result": [1.7e9, "NaN"]}))
    base = template(provider={"prometheus": {"address": empty, "query": "up"}}).provider.prometheus
    assert base is not None
    with pytest.raises(MeasurementError, match="returned 0 samples"):
        prometheus.measure(base, canary="v3", stable="v2")
    with pytest.raises(MeasurementError, match="NaN"):
        prometheus.measure(base.model_copy(update={"address": nan}), canary="v3", stable="v2")
    with pytest.raises(MeasurementError, match="parse error"):
        prometheus.measure(
            base.model_copy(update={"query": "syntax error("}), canary="v3", stable="v2"
        )
    with pytest.raises(MeasurementError, match="unreachable"):
        prometheus.measure(
            base.model_copy(update={"address": "http://127.0.0.1:9"}), canary="v3", stable="v2"
        )


# ---------------------------------------------------------------- analysis Jobs


def test_analysis_job_manifest_and_outcome() -> None:
    owner = {"metadata": {"name": "qwen3-serving", "namespace": "ml", "uid": "u-1"}}
    spec = template(
        provider={"job": {"image": "eval:1", "args": ["--suite", "smoke"], "backoffLimit": 1}},
        successCondition=None,
    )
    assert spec.provider.job is not None
    manifest = build_analysis_job(
        spec.provider.job,
        owner=owner,
        template="smoke",
        key="v3/2/t/0",
        canary="v3",
        stable="v2",
        canary_pods=["10.0.0.7:8000"],
    )
    name = manifest["metadata"]["name"]
    assert name == analysis_job_name("qwen3-serving", "smoke", "v3/2/t/0") and len(name) <= 63
    assert name != analysis_job_name("qwen3-serving", "smoke", "v3/2/t/1")
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "DELTAROLL_CANARY_PODS", "value": "10.0.0.7:8000"} in container["env"]
    assert container["args"] == ["--suite", "smoke"] and container["image"] == "eval:1"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job_outcome({"status": {"active": 1}}) is None
    assert job_outcome({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == (
        "Successful"
    )
    assert job_outcome({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == (
        "Failed"
    )
