"""Imports flow one way, and each side effect has one door."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "castwall"


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules():
    return {str(p.relative_to(PKG.parent)).removesuffix(".py").replace("/", "."): imports_of(p) for p in PKG.rglob("*.py")}


def users_of(prefix: str) -> set[str]:
    return {m for m, names in modules().items() if any(n == prefix or n.startswith(prefix + ".") for n in names)}


def test_only_discovery_touches_mdns_and_pychromecast_only_serves_check_app():
    assert users_of("zeroconf") == {"castwall.system.discovery"}
    # castwall reads announcements itself (castwall.announcement): see the README's security model.
    # pychromecast speaks the Cast protocol for check --app alone, imported when that runs.
    assert users_of("pychromecast") == {"castwall.system.cast_sender"}
    mentions = {m for m in modules() if "cast_sender" in (PKG.parent / (m.replace(".", "/") + ".py")).read_text()}
    assert mentions == {"castwall.commands.check"}
    assert users_of("http.server") == {"castwall.system.cast_sender"}


def test_only_the_command_line_imports_click():
    users = users_of("click")
    assert "castwall.cli" in users and all(m in ("castwall.cli", "castwall.cli_params") or m.startswith("castwall.commands.")
                                           for m in users), users


def test_help_and_version_load_nothing_of_the_commands():
    """cli.py declares the commands; what they do is imported only when one runs."""
    import subprocess
    import sys

    code = ("import sys; from castwall.cli import cli\n"
            "try:\n    cli(['--version'], prog_name='castwall')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('castwall')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent)
    assert done.stdout.strip().splitlines()[-1] == "['castwall', 'castwall.cli', 'castwall.cli_params', 'castwall.errors']"


def test_only_the_runner_starts_processes():
    assert users_of("subprocess") == {"castwall.system.runner"}


def test_only_the_in_process_ufw_path_loads_ufws_library():
    # ufw's library runs iptables itself; it is loaded only for root's setup, remove and status.
    assert users_of("ufw") == {"castwall.system.ufwlib"}


def test_no_packet_library_at_run_time():
    # Raw ARP uses a packet socket (castwall.system.arp); scapy is for the lab's tests only.
    assert users_of("scapy") == set()


def test_only_raw_arp_and_dial_open_packet_sockets():
    # ARP claims (system.arp) and DIAL replies before the firewall drops them (system.ssdp), both as root only.
    users = {m for m, _ in modules().items() if "AF_PACKET" in (PKG.parent / (m.replace(".", "/") + ".py")).read_text()}
    assert users == {"castwall.system.arp", "castwall.system.ssdp"}


def test_dial_is_read_by_pure_code_and_fetched_by_one_module():
    assert users_of("http.client") == {"castwall.system.description"}
    assert users_of("xml.parsers.expat") == {"castwall.dial"}
    assert users_of("castwall.system.ssdp") <= {"castwall.commands.services", "castwall.system.discovery"}
    assert users_of("castwall.system.description") == {"castwall.system.ssdp"}


def test_each_firewall_library_is_loaded_by_its_own_backend_only():
    # python3-nftables and python3-firewall are Debian's; PyPI's stack has neither, and the commands take over.
    assert users_of("nftables") == {"castwall.system.nftables"}
    assert users_of("firewall.client") | users_of("firewall") <= {"castwall.system.firewalld_bus"}
    assert users_of("firewall.client") | users_of("firewall")


def test_backends_are_peers_and_the_planner_knows_none_of_them():
    backends = {"castwall.system.ufw", "castwall.system.ufwlib", "castwall.system.firewalld", "castwall.system.firewalld_bus",
                "castwall.system.firewalld_view", "castwall.system.nftables", "castwall.system.nft_ruleset"}
    peers = {"castwall.system.nftables": {"castwall.system.nft_ruleset"}, "castwall.system.ufwlib": {"castwall.system.ufw"},
             "castwall.system.firewalld": {"castwall.system.firewalld_bus", "castwall.system.firewalld_view"},
             "castwall.system.firewalld_view": {"castwall.system.firewalld_bus"}, "castwall.system.firewalls": {"castwall.system.nft_ruleset"}}
    for module in backends | {"castwall.system.firewalls"}:
        reached = {n for n in modules()[module] if n in backends} - peers.get(module, set()) - {module}
        assert not reached, f"{module} imports {reached}"
    for module in ("castwall.planner", "castwall.follow", "castwall.apply"):
        assert not {n for n in modules()[module] if n in backends}, module


# The command line's own modules; every other module of the package's top level is the pure core.
ENTRY = {"castwall.__init__", "castwall.__main__", "castwall.cli", "castwall.cli_params"}
# What the pure core may never import: the outside world's doors (processes, sockets, files, the clock's sleep).
OUTSIDE = {"subprocess", "socket", "os", "shutil", "tempfile", "time", "select", "threading", "urllib.request",
           "http.client", "click", "zeroconf", "scapy", "pychromecast"}


def pure_core() -> set[str]:
    return {m for m in modules() if m.count(".") == 1 and m not in ENTRY} - {"castwall.commands", "castwall.system"}


def test_pure_core_does_not_reach_into_system_or_cli_or_the_outside():
    core = pure_core()
    assert {"castwall.model", "castwall.planner", "castwall.follow", "castwall.verdict", "castwall.dial"} <= core
    assert len(core) == 14, sorted(core)  # a new module of the top level joins the core, and this count
    for module in core:
        bad = {n for n in modules()[module] if n.startswith(("castwall.system", "castwall.commands")) or n in ENTRY}
        assert not bad, f"{module} imports {bad}"
        outside = {n for n in modules()[module] if n in OUTSIDE or n.split(".")[0] in OUTSIDE}
        assert not outside, f"{module} imports {outside}"


def test_heavy_libraries_are_imported_lazily():
    """--help must not pay for zeroconf or scapy."""
    for module, path in [("discovery", PKG / "system" / "discovery.py"), ("neighbours", PKG / "system" / "neighbours.py"),
                         ("cast_sender", PKG / "system" / "cast_sender.py"), ("check", PKG / "commands" / "check.py")]:
        top = {n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
               for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))}
        assert not {t for t in top if t and t.split(".")[0] in ("pychromecast", "zeroconf", "scapy")}, module


def test_the_test_fakes_point_at_no_file_of_this_machine(tmp_path):
    """Every path castwall's services use in a CLI test is the test's own: a user who installed the .deb sees the
    suite pass whatever /etc/ufw, the system bus or systemd hold."""
    import dataclasses

    from tests.fakes import services

    svc = services(tmp_path)
    for f in dataclasses.fields(svc.paths):
        path = getattr(svc.paths, f.name)
        assert path.is_relative_to(tmp_path), (f.name, path)
    for name in ("state_file", "follow_record", "nft_include", "firewalld_journal"):
        assert getattr(svc.paths, name).is_relative_to(tmp_path), name


def test_the_command_line_offers_the_firewalls_the_model_knows():
    """cli_params keeps its own copy of the names, so that --help imports no model: the two must agree."""
    from castwall.cli_params import FIREWALL_NAMES
    from castwall.model import FIREWALLS

    assert FIREWALL_NAMES == FIREWALLS
