"""The two ways castwall talks to firewalld: python3-firewall's D-Bus client, or the firewall-cmd command.

Both offer the same small interface (a Transport): read castwall's ipset and
policy, runtime or permanent, as plain values; tell whether the daemon runs;
and carry out one native operation (an Op). An Op also says which
firewall-cmd calls do the same thing, so the plan shows exactly those
commands whichever way castwall ends up talking. Everything firewalld
answers is read defensively: a field of the wrong type reads as empty, and
the backend then finds the object not of castwall's shape.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from castwall.errors import NeedRoot, ToolFailed
from castwall.system.runner import Runner

NAME = "castwall"  # the ipset's and the policy's name
SHIPPED_UDP = "32768-60999"  # the DIAL range the shipped policy opens
SHIPPED_RULE = f'rule family="ipv4" source ipset="{NAME}" port port="{SHIPPED_UDP}" protocol="udp" accept'
IPSET_SHORT, POLICY_SHORT = NAME, NAME
IPSET_DESCRIPTION = "The Cast devices castwall lets reach this computer; castwall adds and removes the entries."
POLICY_DESCRIPTION = ("Lets the Cast devices in the ipset castwall answer DIAL and fetch media from this computer; "
                      "castwall keeps the ports.")
_CMD_TIMEOUT = 60  # firewall-cmd waits for the daemon; a reload of a big configuration takes seconds


@dataclass(frozen=True)
class IpsetInfo:
    type: str
    options: tuple[tuple[str, str], ...]
    entries: tuple[str, ...]


@dataclass(frozen=True)
class PolicyInfo:
    target: str
    ingress: tuple[str, ...]
    egress: tuple[str, ...]
    rich_rules: tuple[str, ...]
    other: tuple[str, ...]  # every other setting that is not empty, as "services: ssh"


_OTHER_KEYS = ("services", "ports", "protocols", "source_ports", "forward_ports", "icmp_blocks")


@dataclass(frozen=True)
class Op:
    """One native change to firewalld; permanent says which configuration, runtime or permanent."""

    kind: str  # add-entry remove-entry add-rule remove-rule create-ipset delete-ipset create-policy delete-policy reload
    permanent: bool = False
    arg: str = ""

    _INVERSE = {"add-entry": "remove-entry", "remove-entry": "add-entry", "add-rule": "remove-rule",
                "remove-rule": "add-rule", "create-ipset": "delete-ipset", "create-policy": "delete-policy"}

    def inverse(self) -> tuple[Op, ...]:
        """The ops that undo this one.

        A deleted ipset or policy stays at runtime until a reload, so undoing a
        creation reloads too. A reload itself has no undo: it loaded the
        permanent configuration, which the other undos put back.
        """
        if self.kind == "reload":
            return ()
        if self.kind.startswith("create-"):
            return (Op(self._INVERSE[self.kind], True), Op("reload"))
        return (Op(self._INVERSE[self.kind], self.permanent, self.arg),)

    def argv(self) -> list[list[str]]:
        """The firewall-cmd calls that make this change, as they run."""
        perm = ["--permanent"] if self.permanent else []
        if self.kind == "reload":
            return [["firewall-cmd", "--reload"]]
        if self.kind in ("add-entry", "remove-entry"):
            return [["firewall-cmd", *perm, f"--ipset={NAME}", f"--{self.kind}={self.arg}"]]
        if self.kind in ("add-rule", "remove-rule"):
            verb = self.kind.split("-")[0]
            return [["firewall-cmd", *perm, f"--policy={NAME}", f"--{verb}-rich-rule={self.arg}"]]
        if self.kind == "create-ipset":
            return [["firewall-cmd", "--permanent", f"--new-ipset={NAME}", "--type=hash:ip", "--option=family=inet"],
                    ["firewall-cmd", "--permanent", f"--ipset={NAME}", f"--set-short={IPSET_SHORT}"],
                    ["firewall-cmd", "--permanent", f"--ipset={NAME}", f"--set-description={IPSET_DESCRIPTION}"]]
        if self.kind == "create-policy":
            policy = ["firewall-cmd", "--permanent", f"--policy={NAME}"]
            return [["firewall-cmd", "--permanent", f"--new-policy={NAME}"], policy + ["--set-target=CONTINUE"],
                    policy + ["--add-ingress-zone=ANY"], policy + ["--add-egress-zone=HOST"],
                    policy + [f"--set-short={POLICY_SHORT}"], policy + [f"--set-description={POLICY_DESCRIPTION}"],
                    policy + [f"--add-rich-rule={SHIPPED_RULE}"]]
        if self.kind in ("delete-ipset", "delete-policy"):
            return [["firewall-cmd", "--permanent", f"--{self.kind}={NAME}"]]
        raise ValueError(f"no such firewalld operation: {self.kind}")


class Transport(Protocol):
    path: str

    def running(self) -> bool: ...

    def ipset(self, permanent: bool) -> IpsetInfo | None: ...

    def policy(self, permanent: bool) -> PolicyInfo | None: ...

    def read(self) -> tuple[IpsetInfo | None, PolicyInfo | None, IpsetInfo | None, PolicyInfo | None]: ...

    def do(self, op: Op) -> bool: ...  # False: firewalld had it so already (another program got there first)


def _strings(value) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(str(v) for v in value if isinstance(v, str))


def _pairs(value) -> tuple[str, ...]:
    """A list of tuples (ports, forward ports) as words, so they can be named in a finding."""
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple("/".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v) for v in value)


def policy_from_settings(settings) -> PolicyInfo:
    """A policy as python3-firewall's settings dict gives it."""
    s = settings if isinstance(settings, dict) else {}
    other = [f"{key.replace('_', '-')}: {' '.join(_pairs(s.get(key)))}" for key in _OTHER_KEYS if _pairs(s.get(key))]
    if s.get("masquerade") not in (False, 0, None):
        other.append("masquerade: yes")
    return PolicyInfo(str(s.get("target", "")), _strings(s.get("ingress_zones")), _strings(s.get("egress_zones")),
                      _strings(s.get("rich_rules")), tuple(other))


def ipset_from_settings(settings) -> IpsetInfo:
    """An ipset as python3-firewall's settings list gives it: version, short, description, type, options, entries."""
    s = list(settings) if isinstance(settings, (list, tuple)) and len(settings) >= 6 else ["", "", "", "", {}, []]
    options = s[4] if isinstance(s[4], dict) else {}
    return IpsetInfo(str(s[3]), tuple(sorted((str(k), str(v)) for k, v in options.items())), _strings(s[5]))


_INFO_LINE = re.compile(r"^  ([a-z][a-z -]*):(?: (.*))?$")


def parse_info(text: str) -> dict[str, list[str]]:
    """`firewall-cmd --info-ipset/--info-policy` output: its "  key: value" lines, and the rich rules below theirs."""
    fields: dict[str, list[str]] = {}
    key = None
    for line in text.splitlines()[1:]:
        match = _INFO_LINE.match(line)
        if match:
            key = match.group(1)
            fields[key] = [match.group(2)] if match.group(2) else []
        elif line.startswith("\t") and key == "rich rules" and line.strip():
            fields[key].append(line.strip())
    return fields


def policy_from_info(text: str) -> PolicyInfo:
    f = parse_info(text)

    def words(key: str) -> tuple[str, ...]:
        return tuple(w for v in f.get(key, []) for w in v.split())

    other = [f"{key}: {' '.join(words(key))}" for key in (k.replace("_", "-") for k in _OTHER_KEYS) if words(key)]
    if words("masquerade") != ("no",):
        other.append(f"masquerade: {' '.join(words('masquerade')) or '?'}")
    target = words("target")
    return PolicyInfo(target[0] if len(target) == 1 else " ".join(target), words("ingress-zones"), words("egress-zones"),
                      tuple(f.get("rich rules", [])), tuple(other))


def ipset_from_info(text: str) -> IpsetInfo:
    f = parse_info(text)
    words = {k: tuple(w for v in vs for w in v.split()) for k, vs in f.items()}
    options = tuple(sorted(tuple(o.split("=", 1)) if "=" in o else (o, "") for o in words.get("options", ())))
    return IpsetInfo(" ".join(words.get("type", ())), options, words.get("entries", ()))


_NO_CHANGE = ("ALREADY_ENABLED", "NOT_ENABLED", "ALREADY_SET")


class CommandTransport:
    """firewalld through the firewall-cmd command: one process per call, ~150 ms each."""

    path = "the firewall-cmd command"

    def __init__(self, runner: Runner):
        self.runner = runner

    def _run(self, argv: list[str], *, missing_ok: str | None = None):
        done = self.runner.run(argv, timeout=_CMD_TIMEOUT)
        text = done.stderr + done.stdout
        if done.returncode == 0:
            return done
        if missing_ok and missing_ok in text:
            return None
        if "NotAuthorized" in text or "Authorization failed" in text:
            raise NeedRoot("firewalld needs root: run castwall with sudo")
        raise ToolFailed(f"'{' '.join(argv)}' failed: {done.last_line()}")

    def running(self) -> bool:
        done = self.runner.run(["firewall-cmd", "--state"], timeout=_CMD_TIMEOUT)
        return done.returncode == 0 and done.stdout.strip() == "running"

    def ipset(self, permanent: bool) -> IpsetInfo | None:
        argv = ["firewall-cmd", *(["--permanent"] if permanent else []), f"--info-ipset={NAME}"]
        done = self._run(argv, missing_ok="INVALID_IPSET")
        return None if done is None else ipset_from_info(done.stdout)

    def policy(self, permanent: bool) -> PolicyInfo | None:
        argv = ["firewall-cmd", *(["--permanent"] if permanent else []), f"--info-policy={NAME}"]
        done = self._run(argv, missing_ok="INVALID_POLICY")
        return None if done is None else policy_from_info(done.stdout)

    def read(self) -> tuple[IpsetInfo | None, PolicyInfo | None, IpsetInfo | None, PolicyInfo | None]:
        """castwall's ipset and policy, runtime then permanent: the four queries at once (each is a new
        Python process, ~150 ms, mostly start-up; together they take about as long as one)."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            jobs = [pool.submit(self.ipset, False), pool.submit(self.policy, False),
                    pool.submit(self.ipset, True), pool.submit(self.policy, True)]
            return tuple(job.result() for job in jobs)

    def do(self, op: Op) -> bool:
        calls = op.argv()
        changed = True
        for i, argv in enumerate(calls):
            try:
                done = self._run(argv)
            except ToolFailed:
                if i and op.kind.startswith("create-"):  # take the half-made object away again
                    for undo in op.inverse()[0].argv():
                        self.runner.run(undo, timeout=_CMD_TIMEOUT)
                raise
            if len(calls) == 1 and any(w in done.stderr + done.stdout for w in _NO_CHANGE):
                changed = False  # firewall-cmd warns and exits 0 when it had it so already
        return changed


class BusTransport:
    """firewalld through python3-firewall's D-Bus client, in process: 1-10 ms a call.

    The client exposes no runtime call for one rich rule of a policy; like
    firewall-cmd, castwall reads the policy's runtime settings and sets them
    back with the one rule added or removed (firewalld applies only the difference).
    """

    path = "python3-firewall's D-Bus client"

    def __init__(self):
        from firewall.client import FirewallClient  # Debian's python3-firewall; absent from a pip install
        self._fw = self._call("connect to firewalld", FirewallClient)

    def _call(self, what: str, fn, *args, missing_ok: str | None = None):
        try:
            return fn(*args)
        except Exception as exc:  # dbus.DBusException or firewall.errors.FirewallError
            getter = getattr(exc, "get_dbus_message", None)
            message = (getter() if getter else None) or str(exc) or type(exc).__name__
            name = getattr(exc, "get_dbus_name", lambda: "")() or ""
            if missing_ok and missing_ok in message:
                return None
            if "NotAuthorized" in name or "AccessDenied" in name:
                raise NeedRoot("firewalld needs root: run castwall with sudo") from None
            if any(message.startswith(w) or f": {w}" in message for w in _NO_CHANGE):
                return _NoChange
            raise ToolFailed(f"firewalld: {what} failed: {message.splitlines()[0] if message else '?'}") from None

    def running(self) -> bool:
        try:
            return bool(self._fw.connected) and self._fw.get_property("state") == "RUNNING"
        except Exception:
            return False

    def read(self) -> tuple[IpsetInfo | None, PolicyInfo | None, IpsetInfo | None, PolicyInfo | None]:
        """castwall's ipset and policy, runtime then permanent (four calls of about 1 ms)."""
        return self.ipset(False), self.policy(False), self.ipset(True), self.policy(True)

    def ipset(self, permanent: bool) -> IpsetInfo | None:
        if permanent:
            obj = self._call("read the permanent ipset", self._fw.config().getIPSetByName, NAME, missing_ok="INVALID_IPSET")
            settings = None if obj is None else self._call("read the permanent ipset", obj.getSettings)
            return None if settings is None else ipset_from_settings(settings.settings)
        settings = self._call("read the ipset", self._fw.getIPSetSettings, NAME, missing_ok="INVALID_IPSET")
        if settings is None:
            return None
        info = ipset_from_settings(settings.settings)
        entries = self._call("read the ipset's entries", self._fw.getEntries, NAME)  # the runtime set itself
        return IpsetInfo(info.type, info.options, _strings(list(entries) if entries else []))

    def policy(self, permanent: bool) -> PolicyInfo | None:
        if permanent:
            obj = self._call("read the permanent policy", self._fw.config().getPolicyByName, NAME,
                             missing_ok="INVALID_POLICY")
            settings = None if obj is None else self._call("read the permanent policy", obj.getSettings)
        else:
            settings = self._call("read the policy", self._fw.getPolicySettings, NAME, missing_ok="INVALID_POLICY")
        return None if settings is None else policy_from_settings(settings.getSettingsDict())

    def do(self, op: Op) -> bool:
        return self._call(" ".join(op.argv()[0][1:]), self._op, op) is not _NoChange

    def _op(self, op: Op):
        from firewall.client import FirewallClientIPSetSettings, FirewallClientPolicySettings
        fw, config = self._fw, self._fw.config()
        if op.kind == "reload":
            return fw.reload()
        if op.kind == "create-ipset":
            return config.addIPSet(NAME, FirewallClientIPSetSettings(
                ["", IPSET_SHORT, IPSET_DESCRIPTION, "hash:ip", {"family": "inet"}, []]))
        if op.kind == "create-policy":
            settings = FirewallClientPolicySettings()
            settings.setSettingsDict({"short": POLICY_SHORT, "description": POLICY_DESCRIPTION, "target": "CONTINUE",
                                      "ingress_zones": ["ANY"], "egress_zones": ["HOST"], "rich_rules": [SHIPPED_RULE]})
            return config.addPolicy(NAME, settings)
        if op.kind == "delete-ipset":
            return config.getIPSetByName(NAME).remove()
        if op.kind == "delete-policy":
            return config.getPolicyByName(NAME).remove()
        if op.kind in ("add-entry", "remove-entry"):
            add = op.kind == "add-entry"
            if op.permanent:
                obj = config.getIPSetByName(NAME)
                return obj.addEntry(op.arg) if add else obj.removeEntry(op.arg)
            return fw.addEntry(NAME, op.arg) if add else fw.removeEntry(NAME, op.arg)
        if op.kind in ("add-rule", "remove-rule"):
            obj = config.getPolicyByName(NAME) if op.permanent else None
            settings = obj.getSettings() if obj else fw.getPolicySettings(NAME)
            (settings.addRichRule if op.kind == "add-rule" else settings.removeRichRule)(op.arg)
            return obj.update(settings) if obj else fw.setPolicySettings(NAME, settings)
        raise ValueError(f"no such firewalld operation: {op.kind}")


class _NoChange:
    """What a call answers when firewalld had it so already."""
