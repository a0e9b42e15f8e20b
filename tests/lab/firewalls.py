"""The workstation's firewall, for castwall's firewall backends (a part of Lab).

Lab(firewall=...) chooses what filters the workstation's traffic:

- "ufw" (the default): real ufw, default deny, enabled on the private copy
  of /etc/ufw, as the lab always had it.
- "nftables": an admin's own nftables ruleset, from a private
  /etc/nftables.conf (a file bind-mounted in the workstation; its host path
  is Lab.nftables_conf) loaded with `nft -f /etc/nftables.conf`: it starts
  with `flush ruleset`; table inet filter, chain input (policy drop:
  established and related, lo, mDNS on UDP 5353 as ufw's stock rules allow
  it, SSH, and the admin's own rule for the printer host's TCP 631, comment
  "printer"), forward (policy drop) and output (policy accept), and a named
  set admin_hosts; and another table of the admin's, ip admin_nat.
  ufw stays disabled.
- "firewalld": a real firewalld 1.x (nftables backend) on a private system
  D-Bus (dbus-daemon --system), both lab processes in the workstation, with
  private copies of /etc/firewalld, /usr/lib/firewalld (plus castwall's
  data/firewalld XML when the checkout has it and ship_xml is true: the
  installed .deb; install_firewalld_xml() does it later, as a .deb installed
  while firewalld runs), and /var/log, on the workstation's private /run.
  The admin's own configuration: default zone public with the mdns service
  added (permanent), a rich rule of theirs in public (the printer host's TCP
  631) and an ipset of theirs, admin_hosts. ufw stays disabled.
- "none": nothing filters (ufw disabled, no nft ruleset, no firewalld).

Fault injectors for the firewalls' command paths (wrappers bind-mounted in
the workstation only, like faults.py's) and for castwall's in-process
library paths (a sitecustomize.py on castwall's PYTHONPATH in the lab): the
real tool, library and daemon do the work; a fault is injected at the at-th
call that changes something. nft, firewalld and firewall-cmd only ever run
inside the workstation's namespaces.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.lab.common import SAFE_PATH, LabError
from tests.lab.faults import FAULT_COUNT

FIREWALLS = ("ufw", "nftables", "firewalld", "none")
REPO = Path(__file__).resolve().parents[2]
CASTWALL_XML = {"ipsets": REPO / "data" / "firewalld" / "ipsets" / "castwall.xml",
                "policies": REPO / "data" / "firewalld" / "policies" / "castwall.xml"}
PRINTER_PORT = 631
FIREWALLD_START_TIMEOUT = 60


def firewall_missing(kind: str) -> str | None:
    """Why Lab(firewall=kind) cannot run here (beyond missing_requirements()), or None."""
    if kind not in FIREWALLS:
        return f"no such lab firewall {kind!r} (one of {', '.join(FIREWALLS)})"
    need = {"nftables": ("nft",), "firewalld": ("nft", "firewalld", "firewall-cmd", "dbus-daemon")}.get(kind, ())
    for tool in need:
        if shutil.which(tool, path=SAFE_PATH) is None:
            return f"the lab's {kind} workstation needs {tool} (scripts/bootstrap installs it)"
    if kind == "nftables" and not Path("/etc/nftables.conf").is_file():
        return "the lab's nftables workstation needs /etc/nftables.conf to bind its own copy over"
    if kind == "firewalld":
        for path in ("/etc/firewalld", "/usr/lib/firewalld", "/usr/share/dbus-1/system.conf"):
            if not Path(path).exists():
                return f"the lab's firewalld workstation needs {path}"
    return None


def nftables_ruleset(subnet: str, printer_ip: str) -> str:
    """The admin's /etc/nftables.conf of the lab's "nftables" workstation."""
    return f"""#!/usr/sbin/nft -f
# The lab workstation's own firewall, as an admin wrote it (tests/lab/firewalls.py).
flush ruleset

table inet filter {{
	set admin_hosts {{
		type ipv4_addr
		elements = {{ {printer_ip} }}
	}}

	chain input {{
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
		udp dport 5353 accept comment "mDNS"
		tcp dport 22 accept
		ip saddr {printer_ip} tcp dport {PRINTER_PORT} accept comment "printer"
	}}

	chain forward {{
		type filter hook forward priority filter; policy drop;
	}}

	chain output {{
		type filter hook output priority filter; policy accept;
	}}
}}

table ip admin_nat {{
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr {subnet}.0/24 oifname "wan0" masquerade
	}}
}}
"""


class Firewalls:
    """Lab's workstation firewalls (ufw, nftables, firewalld, none) and their fault injectors."""

    firewall: str = "ufw"
    ship_xml: bool = True
    nftables_conf: Path | None = None  # "nftables": the host path of the workstation's /etc/nftables.conf
    firewalld_proc: subprocess.Popen | None = None
    firewalld_started_s: float | None = None  # how long firewalld's last start took, to RUNNING

    # --- building (Lab._build calls _start_firewall where it enabled ufw) --------

    def _start_firewall(self) -> None:
        if self.firewall == "ufw":
            self.ufw("--force", "enable", check=True)
        elif self.firewall == "nftables":
            self.nftables_conf = self.dir / "nftables.conf"
            self.nftables_conf.write_text(nftables_ruleset(self.subnet, self.other_ip))
            self.ws(["mount", "--bind", str(self.nftables_conf), "/etc/nftables.conf"], check=True)
            self.reload_nftables()
        elif self.firewall == "firewalld":
            self._build_firewalld()
        elif self.firewall != "none":
            raise LabError(f"no such lab firewall {self.firewall!r}")

    def _build_firewalld(self) -> None:
        etc, lib, log = self.dir / "etc-firewalld", self.dir / "usr-lib-firewalld", self.dir / "ws-var-log"
        shutil.copytree("/etc/firewalld", etc, symlinks=True)
        shutil.copytree("/usr/lib/firewalld", lib, symlinks=True)
        log.mkdir()
        self._admin_firewalld_config(etc, lib)
        for host, inside in ((etc, "/etc/firewalld"), (lib, "/usr/lib/firewalld"), (log, "/var/log")):
            self.ws(["mount", "--bind", str(host), inside], check=True)
        if self.ship_xml:
            self.install_firewalld_xml()
        (self.dir / "ws-run" / "dbus").mkdir(exist_ok=True)
        socket = self.dir / "ws-run" / "dbus" / "system_bus_socket"
        bus = self._spawn(self.ws_argv(["dbus-daemon", "--system", "--nofork", "--nopidfile"]), self.dir / "dbus.log")
        self._wait(socket.exists, "the workstation's system D-Bus", bus)
        self._start_firewalld()

    def _admin_firewalld_config(self, etc: Path, lib: Path) -> None:
        """The admin's own permanent configuration, as `firewall-cmd --permanent` would have written it."""
        zone = ET.parse(lib / "zones" / "public.xml").getroot()
        ET.SubElement(zone, "service", name="mdns")
        rule = ET.SubElement(zone, "rule", family="ipv4")
        ET.SubElement(rule, "source", address=self.other_ip)
        ET.SubElement(rule, "port", port=str(PRINTER_PORT), protocol="tcp")
        ET.SubElement(rule, "accept")
        ET.ElementTree(zone).write(etc / "zones" / "public.xml", encoding="utf-8", xml_declaration=True)
        (etc / "ipsets" / "admin_hosts.xml").write_text(
            '<?xml version="1.0" encoding="utf-8"?>\n<ipset type="hash:ip">\n'
            f"  <short>Admin hosts</short>\n  <entry>{self.other_ip}</entry>\n</ipset>\n")

    def install_firewalld_xml(self) -> list[str]:
        """castwall's ipset and policy XML into the workstation's /usr/lib/firewalld, as its .deb installs them
        (before firewalld starts with ship_xml; later, firewalld sees them at its next reload). Returns
        what was installed ("ipsets/castwall.xml", ...): nothing while the checkout has no such file."""
        done = []
        for kind, src in CASTWALL_XML.items():
            if src.is_file():
                shutil.copy(src, self.dir / "usr-lib-firewalld" / kind / "castwall.xml")
                done.append(f"{kind}/castwall.xml")
        return done

    def _start_firewalld(self) -> None:
        start = time.monotonic()
        proc = self._spawn(self.ws_argv(["firewalld", "--nofork", "--nopid"]), self.dir / "firewalld.out")
        self.firewalld_proc = proc
        # Waits on firewalld's own state over D-Bus (RUNNING once its rules are in), in one process.
        wait = ["/usr/bin/python3", "-c", _FIREWALLD_WAITER, str(FIREWALLD_START_TIMEOUT)]
        waiter = subprocess.Popen(self.ws_argv(wait),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env={"PATH": SAFE_PATH, "LANG": "C"}, start_new_session=True)
        try:
            out, _ = waiter.communicate(timeout=FIREWALLD_START_TIMEOUT + 10)
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()
        if waiter.returncode != 0 or proc.poll() is not None:
            log = self.dir / "ws-var-log" / "firewalld"
            tail = log.read_text()[-500:] if log.exists() else ""
            raise LabError(f"firewalld did not start in the workstation ({out.strip()}); log: {tail}")
        self.firewalld_started_s = time.monotonic() - start

    # --- using ----------------------------------------------------------------

    def nft(self, *args: str, check: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
        """nft in the workstation."""
        return self.ws(["nft", *args], check=check, input=input)

    def nft_ruleset(self) -> str:
        """`nft list ruleset` of the workstation: its whole netfilter state, for before/after comparisons."""
        return self.nft("list", "ruleset", check=True).stdout

    def reload_nftables(self) -> None:
        """`nft -f /etc/nftables.conf` in the workstation: what an admin's reload (or a boot) does."""
        self.nft("-f", "/etc/nftables.conf", check=True)

    def firewall_cmd(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        """firewall-cmd in the workstation (it talks to the lab's firewalld on the lab's D-Bus)."""
        return self.ws(["firewall-cmd", *args], check=check)

    def firewalld_state(self) -> str:
        """Everything firewalld holds, runtime and permanent, plus its files and the kernel's ruleset, as one text:
        equal texts mean nothing changed. The default zone, every zone's, policy's and ipset's settings at
        runtime and in the permanent configuration (python3-firewall's client), the private /etc/firewalld
        tree (names and sha256), and `nft list ruleset`."""
        # One process asks firewalld for all of it over D-Bus (13 firewall-cmd queries took ~1.8 s). Lists are
        # sorted: firewalld keeps services, rules and entries as sets, and lists them in the order they came.
        text = self.ws(["/usr/bin/python3", "-c", _FIREWALLD_DUMP], check=True, env={"PYTHONPATH": ""}).stdout
        files = []
        root = self.dir / "etc-firewalld"
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_symlink():
                files.append(f"{rel} -> {os.readlink(path)}")
            elif path.is_file():
                files.append(f"{rel} {hashlib.sha256(path.read_bytes()).hexdigest()}")
            else:
                files.append(f"{rel}/")
        return text + "== /etc/firewalld\n" + "\n".join(files) + "\n== nft list ruleset\n" + self.nft_ruleset()

    def reload_firewalld(self) -> None:
        """`firewall-cmd --reload`: firewalld drops its runtime state and loads the permanent one."""
        self.firewall_cmd("--reload", check=True)

    def restart_firewalld(self) -> float:
        """Stop the lab's firewalld by its PID (SIGTERM: it removes its rules, as at shutdown) and start it again
        from its permanent configuration: what a reboot does to firewalld's state. Returns the start's seconds."""
        proc = self.firewalld_proc
        if proc is None:
            raise LabError("firewalld is not part of this lab (Lab(firewall='firewalld'))")
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.remove(proc)
        self._start_firewalld()
        return self.firewalld_started_s

    # --- faults -----------------------------------------------------------------

    def inject_nft_fault(self, mode: str, at: int) -> None:
        """Make the workstation's nft command misbehave on its at-th call that changes the ruleset, from now on.

        Changing calls: `-f FILE` / `-f -` (stdin), or a command (one or several, split on ";") beginning with
        add, create, insert, replace, delete, destroy, flush, reset or rename; not with -c/--check (a dry run),
        not list/monitor/describe. mode: "fail" (that call fails, exit 1, nothing changed), "fail-from" (it and
        every later changing call fail), "term" (SIGTERM to the caller, then the call runs: it changes the
        ruleset), "kill" (the call succeeds, then SIGKILL to the caller, as a power cut would).
        """
        self._wrap("/usr/sbin/nft", "nft", _NFT_WRAPPER, mode, at)

    def inject_firewall_cmd_fault(self, mode: str, at: int) -> None:
        """The same faults for firewall-cmd in the workstation, on its at-th call that changes something: any
        argument --add-*, --remove-*, --new-*, --delete-*, --set-*, --change-*, --reload, --complete-reload,
        --runtime-to-permanent, --load-*-defaults or --reset-to-defaults (with or without --permanent).
        Queries (--get-*, --list-*, --info-*, --query-*, --state) pass. Modes as for inject_nft_fault.
        """
        self._wrap("/usr/bin/firewall-cmd", "firewall-cmd", _FIREWALL_CMD_WRAPPER, mode, at)

    def inject_firewall_lib_fault(self, mode: str, at: int) -> None:
        """The same faults for castwall's in-process library paths: a sitecustomize.py in the lab's copy of
        castwall's source (first on the PYTHONPATH of Lab.castwall, castwall_measured and follow passes) wraps
        python3-nftables' Nftables.cmd and cmd_from_file (json_cmd goes through cmd: one call each), and for
        python3-firewall (firewall.client) its D-Bus method calls on the interfaces org.fedoraproject.FirewallD1*
        (one per client call), once those libraries are imported; processes named firewall-cmd or firewalld are left
        alone. Changing calls: nftables commands as for inject_nft_fault (JSON commands by their keys,
        cmd_from_file always); firewalld methods named add*, remove*, set*, change*, update*, rename*,
        reload, completeReload, runtimeToPermanent, loadDefaults, resetToDefaults, enable*, disable*.
        mode: "fail" (the call changes nothing: nftables returns rc 1 and an error text, firewalld raises
        dbus.exceptions.DBusException, as a real failure would), "fail-from" (it and every later one),
        "term" (the call is made, then SIGTERM to castwall's own process before the call returns: its
        handler runs while the change is made but not yet seen), "kill" (the call is made, then SIGKILL).
        Counted in <lab>/pylib-fault.count, controlled by <lab>/pylib-fault.
        """
        control = self.dir / "pylib-fault"
        site = self.dir / "src" / "sitecustomize.py"
        site.write_text(_SITECUSTOMIZE.replace("@CONTROL@", repr(str(control))))
        site.chmod(0o644)
        control.write_text(f"{mode} {at}\n")
        (self.dir / "pylib-fault.count").write_text("0\n")

    def clear_firewall_faults(self) -> None:
        """End the faults of the three injectors above (their wrappers then pass every call through)."""
        for name in ("nft-fault", "firewall-cmd-fault", "pylib-fault"):
            (self.dir / name).unlink(missing_ok=True)

    def fault_calls(self, which: str) -> int:
        """How many changing calls an injector ("nft", "firewall-cmd", "pylib") has counted since injected."""
        path = self.dir / f"{which}-fault.count"
        return int(path.read_text().strip() or 0) if path.exists() else 0



# Prints everything firewalld holds, runtime and permanent, as sorted JSON (Lab.firewalld_state).
_FIREWALLD_DUMP = """
import json
from firewall.client import FirewallClient


def plain(value):
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return sorted((plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    return str(value)


fw = FirewallClient()
config = fw.config()
state = {
    "default zone": fw.getDefaultZone(),
    "zones": {z: fw.getZoneSettings(z).getSettingsDict() for z in fw.getZones()},
    "policies": {p: fw.getPolicySettings(p).getSettingsDict() for p in fw.getPolicies()},
    "ipsets": {i: fw.getIPSetSettings(i).settings for i in fw.getIPSets()},
    "permanent zones": {z: config.getZoneByName(z).getSettings().getSettingsDict() for z in config.getZoneNames()},
    "permanent policies": {p: config.getPolicyByName(p).getSettings().getSettingsDict() for p in config.getPolicyNames()},
    "permanent ipsets": {i: config.getIPSetByName(i).getSettings().settings for i in config.getIPSetNames()},
}
print(json.dumps(plain(state), indent=1, sort_keys=True))
"""

# Polls firewalld's state property over the workstation's system bus, in one process, until RUNNING.
_FIREWALLD_WAITER = """
import sys, time
import dbus
deadline = time.monotonic() + float(sys.argv[1])
last = "no answer"
while time.monotonic() < deadline:
    try:
        bus = dbus.SystemBus()
        obj = bus.get_object("org.fedoraproject.FirewallD1", "/org/fedoraproject/FirewallD1", introspect=False)
        last = str(obj.Get("org.fedoraproject.FirewallD1", "state", dbus_interface="org.freedesktop.DBus.Properties"))
        if last == "RUNNING":
            sys.exit(0)
        if last == "FAILED":
            break
    except dbus.exceptions.DBusException as e:
        last = e.get_dbus_name() or str(e)
    time.sleep(0.05)
print("firewalld state:", last)
sys.exit(1)
"""

# The fault injectors count the changing calls they see and decide whether this one is hit (faults.py's counter).
_COUNT_AND_ACT = FAULT_COUNT + """[ $hit = yes ] || exec {real} "$@"
case "$mode" in
  fail|fail-from) echo "Error: lab fault injected into $name call $n" >&2; exit 1 ;;
  term) kill -TERM "$PPID"; exec {real} "$@" ;;
  kill) {real} "$@"; kill -KILL "$PPID"; exit 0 ;;
esac
"""

_NFT_WRAPPER = """#!/bin/bash
# The lab's fault injector in front of the real nft (see Lab.inject_nft_fault).
name=nft
[ -f {control} ] || exec {real} "$@"
changes=no check=no skip=no words=()
for a in "$@"; do
    if [ $skip = yes ]; then skip=no; continue; fi
    if [ ${{#words[@]}} -eq 0 ]; then
        case "$a" in
            --check) check=yes; continue ;;
            --file) changes=yes; skip=yes; continue ;;
            --file=*) changes=yes; continue ;;
            --includepath|--define) skip=yes; continue ;;
            --*) continue ;;
            -?*)
                flags=${{a#-}}
                while [ -n "$flags" ]; do
                    c=${{flags:0:1}} flags=${{flags:1}}
                    case "$c" in
                        c) check=yes ;;
                        f) changes=yes; [ -z "$flags" ] && skip=yes; break ;;
                        I|D) [ -z "$flags" ] && skip=yes; break ;;
                    esac
                done
                continue ;;
        esac
    fi
    words+=("$a")
done
for cmd in $(printf '%s\\n' "${{words[*]}}" | tr ';' '\\n' | awk '{{print $1}}'); do
    case "$cmd" in add|create|insert|replace|delete|destroy|flush|reset|rename) changes=yes ;; esac
done
[ $check = yes ] && changes=no
[ $changes = yes ] || exec {real} "$@"
""" + _COUNT_AND_ACT

_FIREWALL_CMD_WRAPPER = """#!/bin/bash
# The lab's fault injector in front of the real firewall-cmd (see Lab.inject_firewall_cmd_fault).
name=firewall-cmd
[ -f {control} ] || exec {real} "$@"
changes=no
for a in "$@"; do
    case "$a" in
        --add-*|--remove-*|--new-*|--delete-*|--set-*|--change-*|--reload|--complete-reload|\\
        --runtime-to-permanent|--load-*-defaults|--reset-to-defaults) changes=yes ;;
    esac
done
[ $changes = yes ] || exec {real} "$@"
""" + _COUNT_AND_ACT

_SITECUSTOMIZE = '''"""The lab's fault injector for castwall's in-process firewall libraries (see Lab.inject_firewall_lib_fault)."""
import importlib.abc
import json
import os
import re
import signal
import sys

_CONTROL = @CONTROL@
_NFT_VERBS = {"add", "create", "insert", "replace", "delete", "destroy", "flush", "reset", "rename"}
_FWD_METHOD = re.compile(r"^(add|remove|set|change|update|rename|enable|disable)|^(reload|completeReload|"
                         r"runtimeToPermanent|loadDefaults|resetToDefaults)$")


def _left_alone():
    program = os.path.basename(sys.argv[0] if sys.argv else "")
    return program.startswith(("firewall-cmd", "firewall-offline-cmd", "firewalld"))


def _hit():
    """Count this changing call; its fault mode when it is hit, else None."""
    if _left_alone() or not os.path.exists(_CONTROL):
        return None
    try:
        with open(_CONTROL) as f:
            mode, at = f.read().split()
        with open(_CONTROL + ".count") as f:
            n = int(f.read().strip() or 0) + 1
        with open(_CONTROL + ".count", "w") as f:
            f.write(f"{n}\\n")
    except (OSError, ValueError):
        return None
    at = int(at)
    if n == at or (mode == "fail-from" and n >= at):
        return mode, n
    return None


def _around(real, mode, n, fail):
    if mode in ("fail", "fail-from"):
        return fail(n)
    result = real()
    os.kill(os.getpid(), signal.SIGTERM if mode == "term" else signal.SIGKILL)
    return result


def _nft_changes(text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            items = json.loads(stripped).get("nftables", [])
        except (ValueError, AttributeError):
            return False
        return any(isinstance(i, dict) and _NFT_VERBS & set(i) for i in items)
    return any(cmd.split()[0] in _NFT_VERBS for cmd in re.split(r"[;\\n]", text) if cmd.split())


def _patch_nftables(module):
    cls = module.Nftables
    real_cmd, real_file = cls.cmd, cls.cmd_from_file

    def fail(n):
        return 1, "", f"Error: lab fault injected into nftables call {n}\\n"

    def cmd(self, cmdline):
        hit = _hit() if _nft_changes(cmdline) else None
        if hit is None:
            return real_cmd(self, cmdline)
        return _around(lambda: real_cmd(self, cmdline), *hit, fail)

    def cmd_from_file(self, filename):
        hit = _hit()
        if hit is None:
            return real_file(self, filename)
        return _around(lambda: real_file(self, filename), *hit, fail)

    cls.cmd, cls.cmd_from_file = cmd, cmd_from_file


def _patch_firewall_client(module):
    import dbus.connection
    import dbus.exceptions

    conn = dbus.connection.Connection
    real = conn.call_blocking
    if getattr(real, "_lab_fault", False):
        return

    def fail(n):
        raise dbus.exceptions.DBusException(f"lab fault injected into firewalld call {n}",
                                            name="org.fedoraproject.FirewallD1.Exception")

    def call_blocking(self, bus_name, object_path, dbus_interface, method, *args, **kwargs):
        hit = None
        # By interface: a proxy calls the daemon's unique bus name (":1.N"), not org.fedoraproject.FirewallD1.
        if str(dbus_interface).startswith("org.fedoraproject.FirewallD1") and _FWD_METHOD.search(str(method)):
            hit = _hit()
        if hit is None:
            return real(self, bus_name, object_path, dbus_interface, method, *args, **kwargs)
        return _around(lambda: real(self, bus_name, object_path, dbus_interface, method, *args, **kwargs), *hit, fail)

    call_blocking._lab_fault = True
    conn.call_blocking = call_blocking


_PATCHES = {"nftables": _patch_nftables, "firewall.client": _patch_firewall_client}


class _Finder(importlib.abc.MetaPathFinder):
    """Patches a library right after its module is executed, whoever imports it."""

    def find_spec(self, name, path, target=None):
        if name not in _PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader, patch = spec.loader, _PATCHES[name]
        real_exec = loader.exec_module

        def exec_module(module):
            real_exec(module)
            patch(module)

        loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())
'''
