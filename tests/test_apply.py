"""The transaction: any failure or signal leaves ufw as it was, or says exactly what differs."""

import ipaddress
import os
import signal

import pytest

from castwall.apply import deferred_signals, placed, run_transaction
from castwall.errors import FirewallInconsistent, FirewallRolledBack, Interrupted, ToolFailed
from castwall.model import Action, PortRange, Rule, Step
from castwall.system.ufw import UfwFirewall, parse_show_added
from tests.fakes import FakeUfw

PR = PortRange(32768, 60999)
USER_RULES = ["ufw allow 22/tcp", "ufw allow from 192.168.77.60 to any port 32768:60999 proto udp"]


def rule(n):
    return Rule(ipaddress.ip_address(f"192.168.77.{100 + n}"), PR, f"{n:08x}-0000-4000-8000-{n:012x}")


def old_tagged_line(n):
    return f"ufw allow from 192.168.77.{100 + n} to any port 32768:60999 proto udp comment 'castwall:{rule(n).owner}'"


def mixed_steps():
    """Two deletes then three adds, as a plan that moves devices orders them."""
    return [Step(Action.DELETE, rule(1), "gone"), Step(Action.DELETE, rule(2), "gone")] + [
        Step(Action.ADD, rule(n), "new") for n in (3, 4, 5)
    ]


def test_all_steps_applied():
    ufw = FakeUfw(lines=USER_RULES + [old_tagged_line(1), old_tagged_line(2)])
    done = run_transaction(UfwFirewall(ufw), mixed_steps())
    assert len(done) == 5
    assert ufw.castwall_lines() == [ufw._line(rule(n).ufw_add_args()) for n in (3, 4, 5)]
    assert ufw.lines[:2] == USER_RULES


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_failure_at_any_step_restores_ufw_exactly(k):
    before = USER_RULES + [old_tagged_line(1), old_tagged_line(2)]
    ufw = FakeUfw(lines=list(before), fail_calls={k})
    with pytest.raises(FirewallRolledBack, match=f"step {k} of 5 failed.*ufw is as it was before"):
        run_transaction(UfwFirewall(ufw), mixed_steps())
    assert sorted(ufw.lines) == sorted(before)


def test_failing_undo_names_exactly_what_remains():
    before = list(USER_RULES)
    steps = [Step(Action.ADD, rule(n), "new") for n in (1, 2, 3)]
    # calls: add1, add2, add3 fails, undo add2 ok (delete), undo add1 fails
    ufw = FakeUfw(lines=list(before), fail_calls={3, 5})
    with pytest.raises(FirewallInconsistent) as err:
        run_transaction(UfwFirewall(ufw), steps)
    assert "still allowed (added by this run): UDP 32768:60999 from 192.168.77.101" in err.value.message
    assert "192.168.77.102" not in err.value.message
    assert ufw.castwall_lines() == [ufw._line(rule(1).ufw_add_args())]


def test_failed_verification_undoes_the_run():
    ufw = FakeUfw(lines=list(USER_RULES))

    def finish():
        raise ToolFailed("ufw does not show the expected rules afterwards")

    with pytest.raises(FirewallRolledBack, match="after the changes: ufw does not show"):
        run_transaction(UfwFirewall(ufw), [Step(Action.ADD, rule(1), "new")], finish=finish)
    assert ufw.lines == USER_RULES


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_apply_lets_the_call_finish_then_undoes(signum):
    ufw = FakeUfw(lines=list(USER_RULES))
    firewall = UfwFirewall(ufw)
    real_apply = firewall.apply
    calls = []

    def apply(step):
        calls.append(step)
        changed = real_apply(step)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)  # arrives while ufw "runs"
        return changed

    firewall.apply = apply
    with deferred_signals() as interrupted:
        with pytest.raises(Interrupted, match=f"{signal.Signals(signum).name}.*ufw is as it was before"):
            run_transaction(firewall, [Step(Action.ADD, rule(n), "new") for n in (1, 2, 3)], interrupted=interrupted)
    assert ufw.lines == USER_RULES
    assert len(calls) == 4  # two adds, then two undos; the third add never ran


def test_skipped_add_is_not_undone():
    """ufw's 'Skipping adding existing rule' changed nothing, so there is nothing to undo."""
    ufw = FakeUfw(lines=[ufw_line := FakeUfw._line(rule(1).ufw_add_args())], fail_calls={2})
    steps = [Step(Action.ADD, rule(1), "new"), Step(Action.ADD, rule(2), "new")]
    with pytest.raises(FirewallRolledBack, match="nothing had been changed"):
        run_transaction(UfwFirewall(ufw), steps)
    assert ufw.lines == [ufw_line]


def test_a_rolled_back_run_restores_the_order_of_the_rules_too():
    # ufw's first match wins: a rule put back at the end would sit behind the user's deny.
    lines = [old_tagged_line(1), "ufw deny from 192.168.77.0/24", old_tagged_line(2), "ufw allow 22/tcp"]
    ufw = FakeUfw(lines=list(lines), fail_calls={5})
    firewall = UfwFirewall(ufw)
    order = parse_show_added("\n".join(lines)).order
    steps = placed(mixed_steps(), order)
    assert [s.position for s in steps[:2]] == [1, 2]  # rule 2 is second once rule 1 is gone
    with pytest.raises(FirewallRolledBack):
        run_transaction(firewall, steps)
    assert ufw.lines == lines
    assert ("ufw", "insert", "2", *rule(2).ufw_add_args()) in ufw.calls


def test_a_deleted_last_rule_is_put_back_by_appending():
    lines = ["ufw allow 22/tcp", old_tagged_line(1)]
    ufw = FakeUfw(lines=list(lines), fail_calls={2})
    steps = placed([Step(Action.DELETE, rule(1), "gone"), Step(Action.ADD, rule(3), "new")],
                   parse_show_added("\n".join(lines)).order)
    assert steps[0].position is None
    with pytest.raises(FirewallRolledBack):
        run_transaction(UfwFirewall(ufw), steps)
    assert ufw.lines == lines
