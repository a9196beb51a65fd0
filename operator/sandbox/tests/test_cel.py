"""The CEL of CRD rules and admission policies: cel-cpp's language and strings extension, plus the
Kubernetes list library the sandbox declares itself."""

from __future__ import annotations

import pytest

from deltaroll_sandbox.apiserver import cel


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("self.isSorted()", [1, 2, 2, 5], True),
        ("self.isSorted()", [3, 1], False),
        ("self.filter(s, has(s.w)).map(s, s.w).isSorted()", [{"w": 10}, {"p": 1}, {"w": 5}], False),
        ("self.sum()", [1, 5, 2], 8),
        ("self.sum()", [], 0),
        ("self.min()", [4, 2, 9], 2),
        ("self.max()", ["b", "c", "a"], "c"),
        ("self.indexOf(2)", [1, 2, 2], 1),
        ("self.lastIndexOf(2)", [1, 2, 2], 2),
        ("self.indexOf(7)", [1, 2], -1),
        ("self.indexOf('c')", "abcabc", 2),  # the strings' overload is still there
        ("self.indexOf(1)", [True, 1], 1),  # CEL's equality: true is not 1
        ("self.indexOf(1.0)", [1], 0),  # numbers compare by value across int and double
        ("self.lastIndexOf(true)", [True, 1], 0),
        ("self.indexOf([1])", [[True], [1]], 1),
        ("self.indexOf({'a': 1})", [{"a": True}, {"a": 1.0}], 1),
        ("self.sum()", [1.5, 2.5], 4.0),
        ("self.min()", [3, 1.5], 1.5),
        ("self.isSorted()", [False, True], True),
        ("self.lastIndexOf('c')", "abcabc", 5),
        ("self.lowerAscii()", "AbC", "abc"),
        ("self.split('/').join('-')", "a/b/c", "a-b-c"),
        ("self.substring(1, 3)", "abcdef", "bc"),
        ("self.trim()", "  x ", "x"),
        ("!self.matches('(^|/)[.][.](/|$)')", "a/../b", False),
        ("has(self.a) ? self.a : {}", {"b": 1}, {}),
        ("self.all(t, self.filter(u, u.name == t.name).size() == 1)", [{"name": "a"}] * 2, False),
    ],
)
def test_rules_evaluate_as_kubernetes_does(rule: str, value: object, expected: object) -> None:
    assert cel.run(rule, {"self": value}) == expected


@pytest.mark.parametrize(
    ("rule", "value", "error"),
    [
        ("self.min()", [], "min called on empty list"),
        ("self.min()", [True, 0], "no such overload"),  # Python orders true among numbers
        ("self.isSorted()", [1, "a"], "no such overload"),
        ("self.sum()", [2**62, 2**62], "integer overflow"),  # cel-cpp took it as a uint
        ("self.sum()", [True, True], "no such overload"),
        ("self.sum()", [1, 2.5], "no such overload"),
        ("self.missing", {}, "missing"),
        ("self.noSuchFunction()", "x", "compilation failed"),
    ],
)
def test_an_error_is_raised_not_returned(rule: str, value: object, error: str) -> None:
    with pytest.raises(cel.CelError, match=error):
        cel.run(rule, {"self": value})


def test_a_validation_must_be_a_boolean() -> None:
    assert cel.evaluate("self == oldSelf", {"self": {"a": [1]}, "oldSelf": {"a": [1]}}) is True
    with pytest.raises(cel.CelError, match="expected a boolean"):
        cel.evaluate("self.size()", {"self": "abc"})


def test_values_cel_cannot_hold_are_refused_before_evaluation() -> None:
    cel.check_values({"self": {"a": [1, -(2**63), 2**63 - 1, 1.5, None, True, "x"]}})
    for bad in (2**63, -(2**63) - 1, b"bytes", {1, 2}):
        with pytest.raises(cel.CelError):
            cel.check_values({"self": {"deep": [{"value": bad}]}})


def test_an_error_message_is_cut() -> None:
    assert len(str(cel.CelError("x" * 100_000))) <= cel.MESSAGE_LIMIT + 3
