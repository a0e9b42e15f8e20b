"""The ufw adapter: exact argv, and ufw's messages (not its exit status) decide."""

import ipaddress

import pytest

from castwall.errors import MissingTool, NeedRoot, ToolFailed
from castwall.model import Action, PortRange, Rule, Step
from castwall.system.runner import Completed, SubprocessRunner
from castwall.system.ufw import UfwFirewall
from tests.fakes import data

U = "1d19441f-de2a-5a8b-dbeb-dcaae5ab99cb"
RULE = Rule(ipaddress.ip_address("192.168.77.101"), PortRange(32768, 60999), U)


class Scripted:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def which(self, program):
        return "/usr/sbin/ufw"

    def run(self, argv, *, timeout=30.0):
        self.calls.append(tuple(argv))
        rc, out, err = self.answers.pop(0)
        return Completed(tuple(argv), rc, out, err)


def test_add_runs_exactly_this_command():
    runner = Scripted((0, "Rule added\n", ""))
    assert UfwFirewall(runner).apply(Step(Action.ADD, RULE, "new")) is True
    assert runner.calls == [(
        "ufw", "allow", "proto", "udp", "from", "192.168.77.101", "to", "any", "port", "32768:60999",
        "comment", f"castwall:{U}",
    )]


def test_delete_runs_exactly_this_command():
    runner = Scripted((0, "Rule deleted\n", ""))
    assert UfwFirewall(runner).apply(Step(Action.DELETE, RULE, "gone")) is True
    assert runner.calls == [("ufw", "delete", "allow", "proto", "udp", "from", "192.168.77.101", "to", "any", "port", "32768:60999")]


@pytest.mark.parametrize("action,message", [(Action.ADD, "Skipping adding existing rule\n"), (Action.DELETE, "Could not delete non-existent rule\n")])
def test_exit_zero_without_a_change_is_reported_as_no_change(action, message):
    assert UfwFirewall(Scripted((0, message, ""))).apply(Step(action, RULE, "x")) is False


@pytest.mark.parametrize("action", [Action.ADD, Action.DELETE])
def test_inactive_ufw_answers_rules_updated_to_a_change(action):
    assert UfwFirewall(Scripted((0, "Rules updated\n", ""))).apply(Step(action, RULE, "x")) is True


def test_rule_updated_means_another_rule_was_taken_over_and_is_an_error():
    with pytest.raises(ToolFailed, match="merged"):
        UfwFirewall(Scripted((0, "Rule updated\n", ""))).apply(Step(Action.ADD, RULE, "x"))


def test_ufw_error_becomes_one_line():
    text = data("ufw-error.txt")
    stdout = text.split("stdout:\n", 1)[1].split("stderr:\n")[0]
    with pytest.raises(ToolFailed) as err:
        UfwFirewall(Scripted((1, stdout, "ERROR: Invalid syntax\n"))).apply(Step(Action.ADD, RULE, "x"))
    assert err.value.message.endswith("failed: ERROR: Invalid syntax")


def test_status_lines_as_ufw_prints_them():
    assert UfwFirewall(Scripted((0, data("ufw-status-active.txt"), ""))).active() is True
    assert UfwFirewall(Scripted((0, data("ufw-status-inactive.txt"), ""))).active() is False


def test_not_root_is_said_so():
    with pytest.raises(NeedRoot):
        UfwFirewall(Scripted((1, "", "ERROR: You need to be root to run this script\n"))).rules()


def test_missing_program_names_the_package():
    with pytest.raises(MissingTool, match="sudo apt install ufw"):
        SubprocessRunner().run(["/nonexistent/ufw", "status"])
