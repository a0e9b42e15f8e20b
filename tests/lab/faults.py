"""Faults the lab injects into the workstation's ufw and iptables (a part of Lab)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class Faults:
    """Lab's fault injectors: wrappers bind-mounted over ufw and iptables in the workstation only."""

    def inject_ufw_fault(self, mode: str, at: int) -> None:
        """Make the workstation's ufw misbehave on its at-th allow, insert or delete call from now on.

        mode: "fail" (that call fails), "fail-from" (it and every later call
        fail), "term" (SIGTERM to the caller during that call), "kill" (the
        call succeeds, then SIGKILL to the caller, as a power cut would).
        """
        self._wrap("/usr/sbin/ufw", "ufw", _UFW_WRAPPER, mode, at)

    def inject_iptables_fault(self, mode: str, at: int) -> None:
        """The same faults for castwall's in-process ufw path: iptables misbehaves on the at-th
        `iptables -L ufw-user-input` from now on, the call with which ufw's library starts to
        change the running chain for each rule (after it has rewritten its rules file).

        mode as for inject_ufw_fault, except that "fail-from" makes every later iptables
        call of any kind fail too, so ufw's reload fails as well.
        """
        binary = Path(os.path.realpath("/usr/sbin/iptables"))  # xtables' multi-call binary
        real, wrapper = self.dir / "xtables-real", self.dir / "xtables-wrapper"
        control = self.dir / "iptables-fault"
        if not wrapper.exists():
            shutil.copy2(binary, real)
            wrapper.write_text(_IPTABLES_WRAPPER.format(real=real, control=control))
            wrapper.chmod(0o755)
            self.ws(["mount", "--bind", str(wrapper), str(binary)], check=True)
        control.write_text(f"{mode} {at}\n")
        (self.dir / "iptables-fault.count").write_text("0\n")
        (self.dir / "iptables-fault.broken").unlink(missing_ok=True)

    def _wrap(self, binary: str, name: str, template: str, mode: str, at: int) -> None:
        """Put a wrapper (template, with {real} and {control}) over binary in the workstation, once, and arm it:
        mode at the at-th call it counts, counting from 0 again (ufw here; nft and firewall-cmd in firewalls.py)."""
        if mode not in ("fail", "fail-from", "term", "kill") or at < 1:
            raise ValueError(f"fault mode {mode!r} at {at}")
        real, wrapper, control = self.dir / f"{name}-real", self.dir / f"{name}-wrapper", self.dir / f"{name}-fault"
        if not wrapper.exists():
            shutil.copy2(binary, real)
            wrapper.write_text(template.format(real=real, control=control))
            wrapper.chmod(0o755)
            self.ws(["mount", "--bind", str(wrapper), binary], check=True)
        control.write_text(f"{mode} {at}\n")
        (self.dir / f"{name}-fault.count").write_text("0\n")

    def clear_ufw_fault(self) -> None:
        """End the faults of both injectors."""
        for name in ("ufw-fault", "iptables-fault", "iptables-fault.broken"):
            (self.dir / name).unlink(missing_ok=True)

    def running_rules(self) -> str:
        """The workstation's running ufw-user-input chain, as iptables holds it now."""
        return self.ws(["iptables", "-S", "ufw-user-input"], check=True).stdout

    def hide_ufw(self) -> None:
        """Make ufw look uninstalled in the workstation (a non-executable file over it)."""
        blank = self.dir / "no-ufw"
        blank.write_text("")
        blank.chmod(0o644)
        self.ws(["mount", "--bind", str(blank), "/usr/sbin/ufw"], check=True)


# Every fault injector counts the calls it watches and decides whether this one is hit (firewalls.py's too).
FAULT_COUNT = """n=$(( $(cat {control}.count) + 1 ))
echo "$n" > {control}.count
read -r mode at < {control}
hit=no
[ "$n" -eq "$at" ] && hit=yes
[ "$mode" = fail-from ] && [ "$n" -ge "$at" ] && hit=yes
"""

_UFW_WRAPPER = """#!/bin/sh
# The lab's fault injector in front of the real ufw (see Lab.inject_ufw_fault).
case "$1" in allow|delete|insert) ;; *) exec {real} "$@" ;; esac
[ -f {control} ] || exec {real} "$@"
""" + FAULT_COUNT + """[ $hit = yes ] || exec {real} "$@"
case "$mode" in
  fail|fail-from) echo "ERROR: lab fault injected into ufw call $n" >&2; exit 1 ;;
  term) kill -TERM "$PPID"; exec {real} "$@" ;;
  kill) {real} "$@"; kill -KILL "$PPID"; exit 0 ;;
esac
"""

_IPTABLES_WRAPPER = """#!/bin/bash
# The lab's fault injector in front of iptables (see Lab.inject_iptables_fault).
name=$(basename "$0")
[ -f {control}.broken ] && {{ echo "$name: lab fault: iptables is broken" >&2; exit 1; }}
if [ "$name" != iptables ] || [ "$1" != -L ] || [ "$2" != ufw-user-input ] || [ ! -f {control} ]; then
    exec -a "$name" {real} "$@"
fi
""" + FAULT_COUNT + """[ $hit = yes ] || exec -a "$name" {real} "$@"
case "$mode" in
  fail) echo "iptables: lab fault injected into call $n" >&2; exit 1 ;;
  fail-from) touch {control}.broken; echo "iptables: lab fault injected into call $n" >&2; exit 1 ;;
  term) kill -TERM "$PPID"; exec -a "$name" {real} "$@" ;;
  kill) (exec -a "$name" {real} "$@"); kill -KILL "$PPID"; exit 0 ;;
esac
"""
