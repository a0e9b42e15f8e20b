"""The firewalld backend against a fake transport that keeps runtime and permanent state as firewalld 1.3.3 does."""

from __future__ import annotations

import copy
import ipaddress
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from castwall.apply import run_transaction
from castwall.errors import FirewallInconsistent, FirewallRolledBack, ToolFailed
from castwall.model import Action, PortRange, Rule, Step
from castwall.system import firewalld_bus as bus
from castwall.system.firewalld import FirewalldFirewall, forced_cli
from castwall.system.firewalld_view import SHIPPED, Spec, product, read_journal
from castwall.system.firewalld_bus import CommandTransport, IpsetInfo, Op, PolicyInfo
from castwall.system.runner import Completed

U1, U2, U3 = ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222",
              "33333333-3333-3333-3333-333333333333")
DIAL = PortRange(32768, 60999)
UDP_RULE = Spec("udp", DIAL).rich_rule
VLC_RULE = Spec("tcp", PortRange(8010, 8010)).rich_rule
DATA = Path(__file__).resolve().parents[1] / "data" / "firewalld"


def layer(entries=(), rules=(UDP_RULE,), **policy):
    settings = dict(target="CONTINUE", ingress=["ANY"], egress=["HOST"], other=[])
    settings.update(policy)
    return {"ipset": {"type": "hash:ip", "options": [("family", "inet")], "entries": list(entries)},
            "policy": {**settings, "rules": list(rules)}}


@dataclass
class FakeFirewalld:
    """Runtime and permanent configurations; a reload copies permanent to runtime (loading files on disk first)."""

    runtime: dict = field(default_factory=layer)
    permanent: dict = field(default_factory=layer)
    files: bool = False  # the .deb's XML files are on disk
    fail_calls: set = field(default_factory=set)  # 1-based numbers of do() calls that fail
    ops: list = field(default_factory=list)
    journal: Path | None = None
    journal_at: list = field(default_factory=list)  # the journal's text when each op ran
    path: str = "a fake firewalld"

    def running(self) -> bool:
        return True

    def _conf(self, permanent):
        return self.permanent if permanent else self.runtime

    def ipset(self, permanent):
        s = self._conf(permanent).get("ipset")
        return None if s is None else IpsetInfo(s["type"], tuple(s["options"]), tuple(s["entries"]))

    def policy(self, permanent):
        p = self._conf(permanent).get("policy")
        if p is None:
            return None
        return PolicyInfo(p["target"], tuple(p["ingress"]), tuple(p["egress"]), tuple(p["rules"]), tuple(p["other"]))

    def read(self):
        return self.ipset(False), self.policy(False), self.ipset(True), self.policy(True)

    def do(self, op: Op) -> bool:
        self.ops.append(op)
        self.journal_at.append(self.journal.read_text() if self.journal and self.journal.exists() else None)
        if len(self.ops) in self.fail_calls:
            raise ToolFailed(f"firewalld: {op.kind} failed: INVALID_ENTRY")
        conf = self._conf(op.permanent)
        if op.kind == "reload":
            if self.files:
                for key in ("ipset", "policy"):
                    self.permanent.setdefault(key, copy.deepcopy(shipped()[key]))
            self.runtime = copy.deepcopy(self.permanent)
        elif op.kind.startswith("create-"):
            self.permanent[op.kind[7:]] = copy.deepcopy(shipped()[op.kind[7:]])
        elif op.kind.startswith("delete-"):
            del self.permanent[op.kind[7:]]
        else:
            items = conf["ipset"]["entries"] if op.kind.endswith("entry") else conf["policy"]["rules"]
            if op.kind.startswith("add-"):
                if op.arg in items:
                    return False
                items.append(op.arg)
            else:
                if op.arg not in items:
                    return False
                items.remove(op.arg)
        return True

    def state(self):
        """Both configurations; firewalld keeps entries and rich rules as sets, so their order is not compared."""
        out = copy.deepcopy((self.runtime, self.permanent))
        for conf in out:
            if "ipset" in conf:
                conf["ipset"]["entries"].sort()
            if "policy" in conf:
                conf["policy"]["rules"].sort()
        return out


def shipped():
    return layer((), SHIPPED.policy.rich_rules)


class NoRunner:
    def which(self, program):
        return f"/usr/bin/{program}"

    def run(self, argv, *, timeout=30.0):
        raise AssertionError(f"no command should run: {argv}")


def backend(tmp_path, fake, journal=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "firewalld.json"
    if journal is not None:
        path.write_text(json.dumps(journal))
    fake.journal = path
    return FirewalldFirewall(NoRunner(), path, transport=fake, shipped_files=())


def rule(ip, owner, proto="udp", ports=DIAL, app=None):
    return Rule(ipaddress.IPv4Address(ip), ports, owner, proto, app)


def add(*rules):
    return [Step(Action.ADD, r, "test") for r in rules]


def delete(*rules):
    return [Step(Action.DELETE, r, "test") for r in rules]


JOURNAL = {"version": 1, "entries": {"10.0.0.2": U1, "10.0.0.3": U2}, "ports": {"tcp/8010": "vlc"}}


def two_devices():
    return layer(["10.0.0.2", "10.0.0.3"], [UDP_RULE, VLC_RULE])


# --- reading -------------------------------------------------------------------------


def test_rules_are_every_entry_times_every_port_rule_with_owners_from_the_journal(tmp_path):
    fake = FakeFirewalld(two_devices(), two_devices())
    rules = set(backend(tmp_path, fake, JOURNAL).rules().rules)
    assert rules == {rule("10.0.0.2", U1), rule("10.0.0.2", U1, "tcp", PortRange(8010, 8010), "vlc"),
                     rule("10.0.0.3", U2), rule("10.0.0.3", U2, "tcp", PortRange(8010, 8010), "vlc")}


def test_an_entry_or_tcp_port_the_journal_does_not_name_is_nobodys(tmp_path):
    conf = layer(["10.0.0.2", "10.0.0.9"], [UDP_RULE, VLC_RULE, Spec("tcp", PortRange(5000, 5000)).rich_rule])
    ruleset = backend(tmp_path, FakeFirewalld(conf, copy.deepcopy(conf)), JOURNAL).rules()
    owners = {(str(r.ip), r.proto, r.ports.low): (r.owner, r.app) for r in ruleset.rules}
    assert owners[("10.0.0.9", "udp", 32768)] == (None, None)  # added by hand
    assert owners[("10.0.0.9", "tcp", 8010)] == (None, None)
    assert owners[("10.0.0.2", "tcp", 8010)] == (U1, "vlc")
    assert owners[("10.0.0.2", "tcp", 5000)] == (None, None)  # a port the journal does not name
    assert len(ruleset.rules) == 6 and ruleset.odd_tagged == ()


def test_a_broken_journal_makes_every_entry_nobodys(tmp_path):
    fake = FakeFirewalld(two_devices(), two_devices())
    fw = backend(tmp_path, fake)
    fw.journal_path.write_text("{not json")
    assert fw.rules().owned == ()
    assert read_journal(json.dumps({"entries": {"10.0.0.2": "nope", "x": U1, "10.0.0.3": U2},
                                    "ports": {"tcp/8010": "VLC!", "udp/1": "vlc", "tcp/1-2": "catt"}}))[0] \
        .owners == {"10.0.0.3": U2}
    assert read_journal(json.dumps({"ports": {"tcp/1-2": "catt", "tcp/70000": "vlc"}}))[0].apps == {"tcp/1-2": "catt"}


@pytest.mark.parametrize("broken", ["{not json", "[" * 100_000, "[1, 2]"], ids=["invalid", "nested", "a list"])
def test_a_broken_journal_is_kept_beside_the_one_written_over_it(tmp_path, broken):
    fake = FakeFirewalld(layer(["10.0.0.2"], [UDP_RULE]), layer(["10.0.0.2"], [UDP_RULE]))
    fw = backend(tmp_path, fake)
    fw.journal_path.write_text(broken)
    assert fw.rules().owned == ()  # absurd nesting too: read as nobody's, never a RecursionError
    run_transaction(fw, add(rule("10.0.0.5", U3)))[0]
    kept = list(tmp_path.glob(f"{fw.journal_path.name}.unusable-*"))
    assert len(kept) == 1 and kept[0].read_text() == broken
    assert json.loads(fw.journal_path.read_text())["entries"] == {"10.0.0.5": U3}


@pytest.mark.parametrize("change, finding", [
    (dict(other=["services: ssh"]), "services: ssh"),
    (dict(target="ACCEPT"), "target ACCEPT"),
    (dict(ingress=["public"]), "ingress zones public"),
    (dict(egress=["ANY"]), "egress zones ANY"),
    (dict(rules=[UDP_RULE, 'rule family="ipv4" source address="10.0.0.0/8" accept']), "source address"),
    (dict(other=["masquerade: yes"]), "masquerade: yes"),
])
def test_a_policy_not_of_castwalls_shape_is_reported_and_never_changed(tmp_path, change, finding):
    conf = layer(["10.0.0.2"], **change)
    fake = FakeFirewalld(conf, copy.deepcopy(conf))
    fw = backend(tmp_path, fake, JOURNAL)
    ruleset = fw.rules()
    assert any(finding in line and line.startswith("firewalld policy castwall:") for line in ruleset.odd_tagged)
    assert any(finding in p and "will not change it" in p for p in fw.problems())
    before = fake.state()
    with pytest.raises(FirewallRolledBack, match="not its shape"):
        run_transaction(fw, add(rule("10.0.0.5", U3)))
    assert fake.ops == [] and fake.state() == before


def test_odd_ipset_entries_and_options_are_reported(tmp_path):
    conf = layer(["10.0.0.2", "10.1.0.0/16"])
    conf["ipset"]["options"] = [("family", "inet"), ("timeout", "600")]
    ruleset = backend(tmp_path, FakeFirewalld(conf, copy.deepcopy(conf)), JOURNAL).rules()
    assert "firewalld ipset castwall: option timeout=600" in ruleset.odd_tagged
    assert "firewalld ipset castwall: entry 10.1.0.0/16" in ruleset.odd_tagged
    assert [str(r.ip) for r in ruleset.rules] == ["10.0.0.2"]


# --- the product check --------------------------------------------------------------------


def test_a_final_rule_set_that_is_not_a_product_is_refused_before_any_change(tmp_path):
    fake = FakeFirewalld(two_devices(), two_devices())
    fw = backend(tmp_path, fake, JOURNAL)
    before = fake.state()
    with pytest.raises(FirewallRolledBack, match="same ports"):
        run_transaction(fw, delete(rule("10.0.0.3", U2, "tcp", PortRange(8010, 8010), "vlc")))
    assert fake.ops == [] and fake.state() == before
    assert json.loads(fw.journal_path.read_text()) == JOURNAL


def test_product_gives_entries_with_owners_and_ports_with_apps():
    owners, apps = product([rule("10.0.0.2", U1), rule("10.0.0.2", U1, "tcp", PortRange(8010, 8010), "vlc"),
                            rule("10.0.0.9", None), rule("10.0.0.9", None, "tcp", PortRange(8010, 8010))])
    assert owners == {"10.0.0.2": U1, "10.0.0.9": None}
    assert apps == {Spec("udp", DIAL): None, Spec("tcp", PortRange(8010, 8010)): "vlc"}
    with pytest.raises(ToolFailed, match="2 devices"):
        product([rule("10.0.0.2", U1), rule("10.0.0.2", U2, "tcp", PortRange(8010, 8010), "vlc")])


# --- commit ----------------------------------------------------------------------------


def test_commit_writes_the_journal_union_first_adds_rules_before_removing_and_changes_both(tmp_path):
    fake = FakeFirewalld(two_devices(), two_devices())
    fw = backend(tmp_path, fake, JOURNAL)
    new_dial = PortRange(32768, 61000)
    steps = add(rule("10.0.0.2", U1, ports=new_dial), rule("10.0.0.3", U2, ports=new_dial),
                rule("10.0.0.5", U3, ports=new_dial), rule("10.0.0.5", U3, "tcp", PortRange(8010, 8010), "vlc")) \
        + delete(rule("10.0.0.2", U1), rule("10.0.0.3", U2), rule("10.0.0.3", U2, ports=DIAL))
    steps += delete(rule("10.0.0.3", U2, "tcp", PortRange(8010, 8010), "vlc"), rule("10.0.0.3", U2, ports=new_dial))
    done = run_transaction(fw, steps)
    assert len(done) == 8  # the second delete of 10.0.0.3's old DIAL rule finds nothing
    new_rule = Spec("udp", new_dial).rich_rule
    assert fake.ops == [Op("add-rule", False, new_rule), Op("add-rule", True, new_rule),
                        Op("remove-rule", False, UDP_RULE), Op("remove-rule", True, UDP_RULE),
                        Op("add-entry", False, "10.0.0.5"), Op("add-entry", True, "10.0.0.5"),
                        Op("remove-entry", False, "10.0.0.3"), Op("remove-entry", True, "10.0.0.3")]
    union = json.loads(fake.journal_at[0])
    assert union["entries"] == {"10.0.0.2": U1, "10.0.0.3": U2, "10.0.0.5": U3}  # before any entry changed
    assert fake.runtime == fake.permanent
    assert sorted(fake.runtime["ipset"]["entries"]) == ["10.0.0.2", "10.0.0.5"]
    assert json.loads(fw.journal_path.read_text())["entries"] == {"10.0.0.2": U1, "10.0.0.5": U3}
    assert {(str(r.ip), r.ports, r.owner) for r in fw.rules().rules if r.proto == "udp"} == \
        {("10.0.0.2", new_dial, U1), ("10.0.0.5", new_dial, U3)}


def test_a_second_run_with_the_same_steps_changes_nothing(tmp_path):
    fake = FakeFirewalld(two_devices(), two_devices())
    fw = backend(tmp_path, fake, JOURNAL)
    steps = add(rule("10.0.0.2", U1), rule("10.0.0.2", U1, "tcp", PortRange(8010, 8010), "vlc"))
    assert run_transaction(fw, steps) == [] and fake.ops == []
    assert fw.commands(steps) == []


def test_removing_every_entry_keeps_the_ports_and_their_apps(tmp_path):
    fake = FakeFirewalld(two_devices(), two_devices())
    fw = backend(tmp_path, fake, JOURNAL)
    run_transaction(fw, delete(*fw.rules().owned))
    assert fake.runtime["ipset"]["entries"] == [] == fake.permanent["ipset"]["entries"]
    assert fake.runtime["policy"]["rules"] == [UDP_RULE, VLC_RULE] == fake.permanent["policy"]["rules"]
    assert json.loads(fw.journal_path.read_text()) == {"version": 1, "entries": {}, "ports": {"tcp/8010": "vlc"}}


def test_a_hand_added_entry_in_one_configuration_is_left_alone(tmp_path):
    runtime, permanent = two_devices(), two_devices()
    permanent["ipset"]["entries"].append("10.0.0.77")
    fake = FakeFirewalld(runtime, permanent)
    fw = backend(tmp_path, fake, JOURNAL)
    run_transaction(fw, delete(rule("10.0.0.2", U1), rule("10.0.0.2", U1, "tcp", PortRange(8010, 8010), "vlc")))
    assert fake.permanent["ipset"]["entries"] == ["10.0.0.3", "10.0.0.77"]
    assert any("only permanent 10.0.0.77" in p for p in fw.problems())


def _failing_runs(tmp_path, make, steps, journal=JOURNAL):
    """The ops of a good run, then a run failing at each of them in turn: each must leave firewalld as before."""
    good = make()
    run_transaction(backend(tmp_path / "good", good, journal), steps)
    assert good.ops
    for n in range(1, len(good.ops) + 1):
        fake = make()
        fake.fail_calls = {n}
        fw = backend(tmp_path / str(n), fake, journal)
        before = fake.state()
        undo_lines = []
        with pytest.raises(FirewallRolledBack, match="firewalld: .* failed"):
            run_transaction(fw, steps, progress=undo_lines.append)
        assert fake.state() == before, f"failing op {n} ({good.ops[n - 1]}) left a change"
        undone = fake.ops[n:]
        assert undone == [i for op in reversed(fake.ops[:n - 1]) for i in op.inverse()]  # newest first
        if journal is None:
            assert not fw.journal_path.exists()
        else:
            assert json.loads(fw.journal_path.read_text()) == journal
    return good


def test_a_failure_at_each_native_op_is_undone_newest_first(tmp_path):
    new_dial = PortRange(32768, 61000)
    steps = add(rule("10.0.0.2", U1, ports=new_dial), rule("10.0.0.3", U2, ports=new_dial),
                rule("10.0.0.5", U3, ports=new_dial), rule("10.0.0.5", U3, "tcp", PortRange(8010, 8010), "vlc")) \
        + delete(rule("10.0.0.2", U1), rule("10.0.0.3", U2))
    good = _failing_runs(tmp_path, lambda: FakeFirewalld(two_devices(), two_devices()), steps)
    assert len(good.ops) == 6


def test_a_failure_while_creating_castwalls_objects_is_undone_too(tmp_path):
    steps = add(rule("10.0.0.2", U1, ports=PortRange(40000, 50000)))
    good = _failing_runs(tmp_path, lambda: FakeFirewalld({}, {}), steps, journal=None)
    assert [op.kind for op in good.ops[:3]] == ["create-ipset", "create-policy", "reload"]
    assert good.runtime == good.permanent and good.runtime["ipset"]["entries"] == ["10.0.0.2"]
    assert good.runtime["policy"]["rules"] == [Spec("udp", PortRange(40000, 50000)).rich_rule]


def test_installed_files_not_yet_loaded_take_one_reload(tmp_path):
    fake = FakeFirewalld({}, {}, files=True)
    fw = backend(tmp_path, fake)
    (tmp_path / "castwall.xml").write_text("<ipset/>")
    fw.shipped_files = (tmp_path / "castwall.xml",)  # stands for the .deb's files
    steps = add(rule("10.0.0.2", U1))
    assert fw.commands(steps) == ["firewall-cmd --reload", "firewall-cmd --ipset=castwall --add-entry=10.0.0.2",
                                  "firewall-cmd --permanent --ipset=castwall --add-entry=10.0.0.2"]
    run_transaction(fw, steps)
    assert [op.kind for op in fake.ops] == ["reload", "add-entry", "add-entry"]


def test_revert_after_a_successful_commit_puts_everything_back(tmp_path):
    fake = FakeFirewalld(two_devices(), two_devices())
    fw = backend(tmp_path, fake, JOURNAL)
    before = fake.state()

    def verification_fails():
        raise ToolFailed("the plan is not empty afterwards")

    lines = []
    with pytest.raises(FirewallRolledBack, match="after the changes"):
        run_transaction(fw, add(rule("10.0.0.5", U3), rule("10.0.0.5", U3, "tcp", PortRange(8010, 8010), "vlc")),
                        finish=verification_fails, progress=lines.append)
    assert fake.state() == before
    assert json.loads(fw.journal_path.read_text()) == JOURNAL
    assert lines[-2:] == ["undo: firewall-cmd --permanent --ipset=castwall --remove-entry=10.0.0.5",
                          "undo: firewall-cmd --ipset=castwall --remove-entry=10.0.0.5"]


def test_a_failing_undo_is_reported_as_inconsistent(tmp_path):
    from castwall.errors import FirewallInconsistent
    fake = FakeFirewalld(two_devices(), two_devices(), fail_calls={2, 3})
    fw = backend(tmp_path, fake, JOURNAL)
    with pytest.raises(FirewallInconsistent, match="remove-entry=10.0.0.5"):
        run_transaction(fw, add(rule("10.0.0.5", U3), rule("10.0.0.5", U3, "tcp", PortRange(8010, 8010), "vlc")))


# --- commands and problems ---------------------------------------------------------------


def test_commands_are_the_firewall_cmd_calls_in_order(tmp_path):
    fake = FakeFirewalld(two_devices(), two_devices())
    fw = backend(tmp_path, fake, JOURNAL)
    steps = add(rule("10.0.0.2", U1, "tcp", PortRange(45000, 47000), "catt"),
                rule("10.0.0.3", U2, "tcp", PortRange(45000, 47000), "catt")) + delete(rule("10.0.0.3", U2))
    with pytest.raises(ToolFailed):
        fw.commands(steps)  # 10.0.0.3 would lose UDP alone
    steps = steps[:2]
    catt = 'rule family="ipv4" source ipset="castwall" port port="45000-47000" protocol="tcp" accept'
    assert fw.commands(steps) == [f"firewall-cmd --policy=castwall '--add-rich-rule={catt}'",
                                  f"firewall-cmd --permanent --policy=castwall '--add-rich-rule={catt}'"]
    assert fake.ops == []
    run_transaction(fw, steps)
    assert [op.argv()[0][-1] for op in fake.ops] == [f"--add-rich-rule={catt}"] * 2


def test_commands_create_castwalls_objects_where_pip_installed_it(tmp_path):
    fw = backend(tmp_path, FakeFirewalld({}, {}))
    lines = fw.commands(add(rule("10.0.0.2", U1)))
    assert lines[0] == "firewall-cmd --permanent --new-ipset=castwall --type=hash:ip --option=family=inet"
    assert "firewall-cmd --permanent --new-policy=castwall" in lines
    assert lines[-3:] == ["firewall-cmd --reload", "firewall-cmd --ipset=castwall --add-entry=10.0.0.2",
                          "firewall-cmd --permanent --ipset=castwall --add-entry=10.0.0.2"]


def test_problems_name_missing_objects_and_differences(tmp_path):
    assert backend(tmp_path, FakeFirewalld(two_devices(), two_devices()), JOURNAL).problems() == []
    runtime = two_devices()
    runtime["ipset"]["entries"].remove("10.0.0.3")
    problems = backend(tmp_path, FakeFirewalld(runtime, two_devices()), JOURNAL).problems()
    assert problems == ["firewalld's castwall entries differ between runtime and permanent: only at runtime -; "
                        "only permanent 10.0.0.3"]
    # Before castwall has rules (a fresh install, nothing loaded yet) missing objects are no problem.
    assert backend(tmp_path, FakeFirewalld({}, two_devices()), JOURNAL).problems() == []
    recorded = backend(tmp_path, FakeFirewalld(two_devices(), two_devices()), JOURNAL).rules().rules
    problems = backend(tmp_path, FakeFirewalld({}, two_devices()), JOURNAL).problems(recorded)
    assert problems == ["firewalld has no ipset castwall at runtime: 'sudo castwall setup' makes it",
                        "firewalld has no policy castwall at runtime: 'sudo castwall setup' makes it"]


# --- transports, files --------------------------------------------------------------------


def test_the_environment_forces_the_command_and_the_command_path_needs_no_python3_firewall(tmp_path):
    assert forced_cli({"CASTWALL_FIREWALLD": "cli"}) and not forced_cli({})
    fw = FirewalldFirewall(NoRunner(), tmp_path / "j.json", cli=True)
    assert isinstance(fw.transport, CommandTransport) and fw.path == "the firewall-cmd command"


INFO_POLICY = """castwall (active)
  priority: -1
  target: CONTINUE
  ingress-zones: ANY
  egress-zones: HOST
  services: \n  ports: \n  protocols: \n  masquerade: no
  forward-ports: \n  source-ports: \n  icmp-blocks: \n  rich rules: \n\trule family="ipv4" source ipset="castwall" port port="32768-60999" protocol="udp" accept
"""
INFO_IPSET = "castwall\n  type: hash:ip\n  options: family=inet\n  entries: 10.0.0.2 10.0.0.3\n"


class ScriptedRunner:
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def which(self, program):
        return "/usr/bin/firewall-cmd"

    def run(self, argv, *, timeout=30.0):
        self.calls.append(list(argv))
        code, out, err = self.answers.get(argv[-1], (0, "success\n", ""))
        return Completed(tuple(argv), code, out, err)


def test_the_command_transport_reads_firewall_cmds_info_and_its_warnings():
    runner = ScriptedRunner({"--info-policy=castwall": (0, INFO_POLICY, ""), "--info-ipset=castwall": (0, INFO_IPSET, ""),
                             "--add-entry=10.0.0.2": (0, "success\n", "Warning: ALREADY_ENABLED: '10.0.0.2' already is in 'castwall'\n"),
                             "--add-entry=2001:db8::1": (136, "", "Error: INVALID_ENTRY: invalid address\n")})
    t = CommandTransport(runner)
    assert t.policy(False) == PolicyInfo("CONTINUE", ("ANY",), ("HOST",), (UDP_RULE,), ())
    assert t.ipset(True) == IpsetInfo("hash:ip", (("family", "inet"),), ("10.0.0.2", "10.0.0.3"))
    assert runner.calls[-1] == ["firewall-cmd", "--permanent", "--info-ipset=castwall"]
    assert t.do(Op("add-entry", True, "10.0.0.5")) is True
    assert t.do(Op("add-entry", False, "10.0.0.2")) is False
    with pytest.raises(ToolFailed, match="INVALID_ENTRY"):
        t.do(Op("add-entry", False, "2001:db8::1"))
    missing = CommandTransport(ScriptedRunner({"--info-policy=castwall": (2, "", "Error: INVALID_POLICY: castwall\n")}))
    assert missing.policy(False) is None
    odd = bus.policy_from_info(INFO_POLICY.replace("services: ", "services: ssh mdns").replace("masquerade: no", "masquerade: yes"))
    assert odd.other == ("services: ssh mdns", "masquerade: yes")


def test_python3_firewalls_settings_are_read_defensively():
    info = bus.policy_from_settings({"target": "CONTINUE", "ingress_zones": ["ANY"], "egress_zones": ["HOST"],
                                     "rich_rules": [UDP_RULE, 7], "ports": [("22", "tcp")], "masquerade": True})
    assert info.rich_rules == (UDP_RULE,) and info.other == ("ports: 22/tcp", "masquerade: yes")
    assert bus.policy_from_settings(None).target == "" and bus.ipset_from_settings("junk").entries == ()


def test_the_shipped_xml_is_what_castwall_creates_and_reads_as_its_shape():
    ipset = ET.parse(DATA / "ipsets" / "castwall.xml").getroot()
    assert ipset.tag == "ipset" and ipset.get("type") == "hash:ip"
    assert [(o.get("name"), o.get("value")) for o in ipset.findall("option")] == [("family", "inet")]
    assert ipset.findtext("short") == bus.IPSET_SHORT and ipset.findtext("description") == bus.IPSET_DESCRIPTION
    assert ipset.findall("entry") == []
    policy = ET.parse(DATA / "policies" / "castwall.xml").getroot()
    assert policy.tag == "policy" and policy.get("target") == "CONTINUE" and policy.get("priority") is None
    assert [z.get("name") for z in policy.findall("ingress-zone")] == ["ANY"]
    assert [z.get("name") for z in policy.findall("egress-zone")] == ["HOST"]
    assert policy.findtext("short") == bus.POLICY_SHORT and policy.findtext("description") == bus.POLICY_DESCRIPTION
    rules = policy.findall("rule")
    assert len(rules) == 1 and rules[0].get("family") == "ipv4"
    assert rules[0].find("source").attrib == {"ipset": "castwall"}
    assert rules[0].find("port").attrib == {"port": "32768-60999", "protocol": "udp"}
    assert rules[0].find("accept") is not None and len(list(rules[0])) == 3
    assert SHIPPED.policy.rich_rules == (bus.SHIPPED_RULE,) and SHIPPED.findings() == []


# --- what the review found --------------------------------------------------------------


def test_an_entry_added_by_hand_is_never_given_an_owner(tmp_path):
    fake = FakeFirewalld(layer(["10.0.0.50"], [UDP_RULE]), layer(["10.0.0.50"], [UDP_RULE]))
    fw = backend(tmp_path, fake)
    vlc = rule("10.0.0.50", U1, "tcp", PortRange(8010, 8010), "vlc")
    with pytest.raises(FirewallRolledBack, match="entry castwall did not add"):
        run_transaction(fw, [Step(Action.ADD, vlc, "new")])
    assert fake.ops == [] and not (tmp_path / "firewalld.json").exists()
    assert {r.owner for r in fw.rules().rules} == {None}


def test_after_a_failed_undo_the_journal_keeps_the_owner_of_what_stayed(tmp_path):
    fake = FakeFirewalld(layer([]), layer([]), fail_calls={2, 3})  # the permanent add fails, then its runtime undo
    fw = backend(tmp_path, fake)
    with pytest.raises(FirewallInconsistent, match="still allowed"):
        run_transaction(fw, [Step(Action.ADD, rule("10.0.0.60", U1), "new")])
    fake.fail_calls = set()
    assert [r.owner for r in fw.rules().rules] == [U1]  # castwall still owns it: remove --all takes it away


def test_sync_makes_the_permanent_configuration_hold_what_runs_castwalls_only(tmp_path):
    # A remove --device and a remove --app killed after their runtime half: the permanent configuration
    # still has the entry and the port rule, and a reload would bring them back. An entry no journal names stays.
    runtime = layer(["10.0.0.3"], [UDP_RULE])
    permanent = layer(["10.0.0.2", "10.0.0.3", "10.0.0.9"], [UDP_RULE, VLC_RULE])
    fake = FakeFirewalld(runtime, permanent)
    fw = backend(tmp_path, fake, JOURNAL)
    fw.sync()
    assert [(o.kind, o.permanent, o.arg) for o in fake.ops] == [("remove-entry", True, "10.0.0.2"),
                                                                 ("remove-rule", True, VLC_RULE)]
    assert sorted(fake.permanent["ipset"]["entries"]) == ["10.0.0.3", "10.0.0.9"]
    fake.ops.clear()
    fw.sync()
    assert fake.ops == []
