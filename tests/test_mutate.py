"""scripts/mutate itself: it makes the mutants it says, puts them in place, and reports one that no test notices."""

import pytest

from castwall import model
from tests import mutation as mutate


def described(file, function):
    return {(m.original, m.replacement) for m in mutate.mutants(file, function)}


def test_each_kind_of_mutation_is_made():
    got = described("castwall/sanitize.py", "safe_text")
    assert ("len(cleaned) > limit", "(len(cleaned) >= limit)") in got  # a comparison moved by one
    assert ('out and out[-1] != " "', "(out)") in got  # an operand of `and` dropped
    assert ("1", "(2)") in got  # a number
    assert ("isinstance(value, bytes)", "(not isinstance(value, bytes))") in got  # a condition negated
    uuid = described("castwall/model.py", "canonical_uuid")
    assert ("_UUID_RE.fullmatch(text)", "(_UUID_RE.match(text))") in uuid  # a looser match
    assert ('" \\t\\r\\n"', "('')") in uuid  # a string
    verdict = described("castwall/verdict.py", "dial_evidence")
    assert any(new == "pass\n" and old.startswith("if not here.delivered:") for old, new in verdict)  # a guard removed
    follow = described("castwall/follow.py", "_Pass._new_devices")  # a method, too
    assert ("continue", "break") in follow


def test_the_docstring_and_messages_are_left_alone():
    for m in mutate.mutants("castwall/verdict.py", "_let_dial_in"):
        assert "castwall gives it no rule" not in m.original or m.original.startswith("if ")


def test_a_mutant_is_put_in_place_in_the_running_code():
    code = model.canonical_mac.__code__
    [loose] = [m for m in mutate.mutants("castwall/model.py", "canonical_mac")
               if m.replacement == "(_MAC_RE.match(mac))"]
    try:
        mutate.install(loose)
        assert model.canonical_mac("02:ca:57:00:00:01:02") == "02:ca:57:00:00:01:02"  # the bug is live
    finally:
        model.canonical_mac.__code__ = code
    with pytest.raises(ValueError):
        model.canonical_mac("02:ca:57:00:00:01:02")


def test_a_module_level_pattern_is_put_in_place_too():
    pattern = model._MAC_RE
    loose = next(m for m in mutate.mutants("castwall/model.py", "_MAC_RE") if "+" in m.replacement)
    try:
        mutate.install(loose)
        assert model._MAC_RE.fullmatch("002:ca:57:00:00:01")  # the first octet may be any length now
    finally:
        model._MAC_RE = pattern


def test_a_mutant_no_test_notices_is_reported_as_a_survivor_and_one_listed_as_equivalent_is_not_run():
    # canonical_mac's mutants, judged by tests that never call it: every one survives.
    blind = {"blind": mutate.Behaviour("a behaviour with the wrong tests", {"castwall/model.py": ("canonical_mac",)},
                                       ("tests/test_sanitize.py",))}
    every = mutate.mutants("castwall/model.py", "canonical_mac")
    [outcome] = mutate.run(blind, ["blind"], jobs=2, budget=None, equivalent={every[0].key: "said to be"})
    assert outcome.tried == len(every) - 1 and len(every) > 5
    assert len(outcome.survived) == outcome.tried and outcome.killed == 0
    assert outcome.equivalent == [(every[0], "said to be")]


def test_the_behaviours_scripts_mutate_checks_name_functions_and_tests_that_exist():
    import runpy

    table = runpy.run_path(str(mutate.REPO / "scripts" / "mutate"), run_name="castwall_mutate")
    for name, b in table["BEHAVIOURS"].items():
        for test in b.tests:
            assert (mutate.REPO / test).is_file(), (name, test)
        for file, functions in b.targets.items():
            for function in functions:
                assert mutate.mutants(file, function), (name, file, function)
