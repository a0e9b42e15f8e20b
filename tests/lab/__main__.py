"""The demo: castwall's main job on a simulated LAN. Run as root: python3 -m tests.lab demo"""

from __future__ import annotations

import argparse
import json
import sys

from tests.lab import GROUP_NAME, Lab, hostile_case, missing_requirements
from tests.lab.senders import catt_missing

IN_RANGE, OUTSIDE = 45000, 8000


def say(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}", flush=True)


def show(result) -> None:
    for stream in (result.stdout, result.stderr):
        if stream.strip():
            print("   " + stream.rstrip().replace("\n", "\n   "))


def checker(failures: list[str]):
    """expect(ok, what): print the check's outcome, and remember it if it failed."""
    def expect(ok: bool, what: str) -> None:
        print(f"   {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)
    return expect


def demo(devices: int) -> int:
    failures: list[str] = []
    expect = checker(failures)

    say(f"Building a LAN in network namespaces: {devices} Cast devices (one hosts a Cast group), "
        "a printer, a hostile host, and a workstation with ufw (default deny)")
    with Lab(devices=devices, python="/usr/bin/python3") as lab:
        first = lab.devices[0]
        evil_ip = f"{lab.subnet}.66"
        # A hostile host announces fake Cast devices: at the workstation's own
        # address, at the subnet's broadcast address with a terminal escape
        # sequence in its name, and behind a router.
        lab.add_hostile([
            hostile_case(b"Fake-1", "66" * 16, name=b"Totally a TV", addresses=[lab.ws_ip], target="fake-1.local."),
            hostile_case(b"Fake-2", "67" * 16, name=b"TV\x1b[2J\x1b[31m pwned", addresses=[f"{lab.subnet}.255"], target="fake-2.local."),
            hostile_case(b"Fake-3", "68" * 16, name=b"Far away TV", addresses=["10.9.9.9"], target="fake-3.local."),
        ], evil_ip)
        hostile_ns = lab.namespaces[-1]
        print(f"   workstation {lab.ws_ip}; printer {lab.other_ip}; hostile host {evil_ip}; "
              + "; ".join(f"{d.name} {d.ip}" for d in lab.devices))

        say("Before castwall: a Cast device answers Chrome by UDP to a random local port")
        got = lab.udp_reaches({first.name: first.ns}, IN_RANGE)
        expect(got == set(), f"{first.name} -> workstation UDP {IN_RANGE}: dropped by ufw")

        say("castwall discover")
        show(lab.castwall("discover", root=False))

        say("sudo castwall setup --yes")
        result = lab.castwall("setup", "--yes")
        show(result)
        expect(result.returncode == 0, "setup exited 0")

        allowed = {line.split(" from ", 1)[1].split()[0] for line in lab.ufw_added() if " from " in line}
        expect(not allowed & {lab.ws_ip, f"{lab.subnet}.255", "10.9.9.9"},
               "the fakes (the workstation's own address, the broadcast address, behind a router) got no rule")
        expect("\x1b" not in result.stdout + result.stderr, "the escape sequence in a fake's name was shown escaped")

        say("castwall status (as an ordinary user)")
        result = lab.castwall("status", root=False)
        show(result)
        expect(result.returncode == 0, "status: all in place (exit 0)")

        say("castwall hints --format dnsmasq --no-discover (DHCP reservations for the router)")
        result = lab.castwall("hints", "--format", "dnsmasq", "--no-discover", root=False)
        show(result)
        expect(result.returncode == 0 and all(f"dhcp-host={d.mac},{d.ip}," in result.stdout for d in lab.devices),
               "one dnsmasq reservation per device, with its MAC and address")

        say("sudo ufw status (in the workstation)")
        show(lab.ufw("status"))

        say("Traffic proof")
        senders = {d.name: d.ns for d in lab.devices} | {"printer": lab.other_ns, "hostile host": hostile_ns}
        got = lab.udp_reaches(senders, IN_RANGE)
        for d in lab.devices:
            expect(d.name in got, f"{d.name} -> workstation UDP {IN_RANGE} (inside the port range): arrives")
        expect("printer" not in got, f"printer -> workstation UDP {IN_RANGE}: dropped (not a Cast device)")
        expect("hostile host" not in got, f"hostile host -> workstation UDP {IN_RANGE}: dropped")
        got = lab.udp_reaches({first.name: first.ns}, OUTSIDE)
        expect(got == set(), f"{first.name} -> workstation UDP {OUTSIDE} (outside the range): dropped")

        say("sudo castwall check (what Chrome needs, device by device)")
        result = lab.castwall("check")
        show(result)
        expect(result.returncode == 0, "check: Chrome can find and cast to every device (exit 0)")

        say("A sender app: catt casts a file, and the device fetches it from the workstation over TCP")
        why = catt_missing()
        if why:
            print(f"(skipped: {why})")
        else:
            lab.install_profiles()  # castwall's ufw profiles, as the .deb installs them
            first = lab.devices[0]
            media = lab.media_file()
            run = lab.catt_cast(first, media)
            print(f"catt -d {first.ip} cast {media.name}: the device says {run.state}"
                  f" (its fetch: {'arrived' if run.fetch and run.fetch['ok'] else 'dropped by ufw'})")
            expect(run.state == "LOAD_FAILED", "before setup --app catt, ufw drops the device's fetch and the cast fails")
            result = lab.castwall("setup", "--yes", "--app", "catt")
            show(result)
            expect(result.returncode == 0, "setup --app catt exited 0")
            run = lab.catt_cast(first, media)
            print(f"catt -d {first.ip} cast {media.name}: the device says {run.state}"
                  f" ({run.fetch['bytes'] if run.fetch else 0} bytes fetched from catt's port)")
            expect(run.state == "PLAYING", "after setup --app catt, the device fetches the file and plays it")
            show(lab.ufw("status"))

        say("Follow mode: the router gives the TV another lease, and a pass moves its rules there")
        first = lab.devices[0]
        old_ip, new_ip = first.ip, f"{lab.subnet}.180"
        lab.move(first, new_ip)
        result = lab.castwall("follow", "run")
        show(result)
        expect(result.returncode == 0 and f"moved: {first.name} from {old_ip} to {new_ip}" in result.stdout,
               f"follow run moved {first.name}'s rules to {new_ip}, where only its MAC answers ARP")
        expect(lab.udp_reaches({first.name: first.ns}, IN_RANGE) == {first.name},
               f"{first.name} -> workstation UDP {IN_RANGE} from its new address: arrives")

        say("The laptop joins a café's Wi-Fi: the same subnet, another gateway, a stranger at the TV's address")
        cafe = lab.second_lan()
        lab.roam("cafe")
        result = lab.castwall("follow", "run")
        show(result)
        expect(not [line for line in lab.ufw_added() if "castwall:" in line],
               "follow run withdrew every castwall rule at once: this is not the network the devices were approved on")
        expect(lab.udp_reaches({"stranger": cafe.stranger.ns}, IN_RANGE) == set(),
               f"the stranger at {cafe.stranger.ip} -> workstation UDP {IN_RANGE}: dropped")
        lab.roam("home")
        result = lab.castwall("follow", "run")
        show(result)
        expect(result.stdout.count("restored:") == len(lab.devices), "back home, follow run restored every device's rules")
        show(lab.castwall("follow", "status", root=False))

        say("The LAN now loses multicast on its way to the workstation, as many Wi-Fi access points do")
        lab.lose_multicast()
        result = lab.castwall("check", "--json")
        verdicts = {d["name"]: d for d in json.loads(result.stdout)["devices"]}
        show(lab.castwall("check"))
        for d in lab.devices:
            v = verdicts.get(d.name, {})
            expect(v.get("ok") and v.get("chrome_finds_by") == ["dial"],
                   f"{d.name}: Chrome still finds it, by DIAL alone, through castwall's rule")
        expect(verdicts.get(GROUP_NAME, {}).get("ok") is False,
               f"{GROUP_NAME} (a group, which answers no DIAL search) is reported as not found")

        say("Tearing the lab down")
    other_firewalls(expect)
    print(f"\n{'Demo passed.' if not failures else f'Demo FAILED: {len(failures)} check(s).'}")
    return 1 if failures else 0


def other_firewalls(expect) -> None:
    """The same job where the firewall is firewalld, or an admin's own nftables ruleset, or nothing at all."""
    for kind, words in (("nftables", "an admin's nftables ruleset (policy drop)"),
                        ("firewalld", "a real firewalld (zone public)"), ("none", "nothing that filters")):
        say(f"Another workstation, with {words}: sudo castwall setup --yes")
        with Lab(devices=2, python="/usr/bin/python3", firewall=kind) as lab:
            if kind == "none":
                lab.hide_ufw()  # a stock Debian desktop has no ufw
            senders = {d.name: d.ns for d in lab.devices} | {"printer": lab.other_ns}
            before = lab.udp_reaches(senders, IN_RANGE)
            result = lab.castwall("setup", "--yes")
            show(result)
            expect(result.returncode == 0, f"setup on {kind} exited 0")
            got = lab.udp_reaches(senders, IN_RANGE)
            if kind == "none":
                expect(before == got == set(senders) and "nothing to open" in result.stdout,
                       "nothing filters: every UDP arrives already, and setup says there is nothing to open")
                continue
            expect(before == set() and got == {d.name for d in lab.devices},
                   f"{kind}: the devices' UDP arrives after setup, the printer's stays dropped")
            if kind == "nftables":
                print(lab.nft("list", "set", "inet", "filter", "castwall").stdout, end="")
            else:
                print(lab.firewall_cmd("--info-ipset=castwall").stdout, end="")


def installed(devices: int) -> int:
    """The installed package (/usr/bin/castwall, Debian's Python and libraries) in the lab."""
    failures: list[str] = []
    expect = checker(failures)

    say(f"The installed castwall on a simulated LAN of {devices} Cast devices")
    with Lab(devices=devices, python="/usr/bin/python3") as lab:
        where = lab.ws(["/usr/bin/python3", "-c", "import castwall, click, zeroconf; print(castwall.__file__)"])
        expect(where.stdout.startswith("/usr/lib/python3/dist-packages/castwall/"),
               f"castwall is imported from the package: {where.stdout.strip() or where.stderr.strip()}")
        result = lab.ws(["/usr/bin/castwall", "setup", "--dry-run"], env={"CASTWALL_STATE_DIR": str(lab.state_dir)})
        show(result)
        expect(result.returncode == 0, "castwall setup --dry-run exited 0")
        expect(all(d.name in result.stdout for d in lab.devices), "every device is in the plan")
        expect("Dry run: nothing was changed." in result.stdout and not lab.ufw_added(), "ufw was not changed")
        # The package's ufw application profiles (/etc/ufw/applications.d/castwall, copied into the lab's
        # private /etc/ufw like the rest of it): setup --app writes its rules through them.
        env = {"CASTWALL_STATE_DIR": str(lab.state_dir)}
        listed = lab.ws(["/usr/bin/castwall", "apps"], env=env)
        expect(listed.returncode == 0 and "castwall-vlc " in listed.stdout and "(installed)" in listed.stdout,
               "castwall apps sees the package's profiles")
        result = lab.ws(["/usr/bin/castwall", "setup", "--yes", "--app", "vlc"], env=env)
        show(result)
        through = [line for line in lab.ufw_added() if " app castwall-vlc comment 'castwall:" in line]
        expect(result.returncode == 0 and len(through) == len(lab.devices),
               f"setup --app vlc wrote one rule per device through the castwall-vlc profile ({len(through)})")
        apps_info = lab.ufw("app", "info", "castwall-vlc")
        expect("8010/tcp" in apps_info.stdout, "ufw itself reads the castwall-vlc profile: 8010/tcp")
        removed = lab.ws(["/usr/bin/castwall", "remove", "--yes", "--app", "vlc"], env=env)
        expect(removed.returncode == 0 and not [line for line in lab.ufw_added() if "castwall-vlc" in line],
               "remove --app vlc deleted them again")
    print(f"\n{'Installed package: passed.' if not failures else f'Installed package: FAILED {len(failures)} check(s).'}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab")
    parser.add_argument("command", choices=["demo", "installed"])
    parser.add_argument("--devices", type=int, default=4, help="Cast devices to simulate (default 4)")
    args = parser.parse_args()
    why = missing_requirements()
    if why:
        print(f"demo: {why}", file=sys.stderr)
        return 4
    return demo(args.devices) if args.command == "demo" else installed(args.devices)


if __name__ == "__main__":
    sys.exit(main())
