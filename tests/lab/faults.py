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
        real, wrapper = self.dir / "ufw-real", self.dir / "ufw-wrapper"
        control = self.dir / "ufw-fault"
        if not wrapper.exists():
            shutil.copy2("/usr/sbin/ufw", real)
            wrapper.write_text(_UFW_WRAPPER.format(real=real, control=control))
            wrapper.chmod(0o755)
            self.ws(["mount", "--bind", str(wrapper), "/usr/sbin/ufw"], check=True)
        control.write_text(f"{mode} {at}\n")
        (self.dir / "ufw-fault.count").write_text("0\n")

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


# Both fault injectors count the calls they watch and decide whether this one is hit.
_FAULT_COUNT = """n=$(( $(cat {control}.count) + 1 ))
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
""" + _FAULT_COUNT + """[ $hit = yes ] || exec {real} "$@"
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
""" + _FAULT_COUNT + """[ $hit = yes ] || exec -a "$name" {real} "$@"
case "$mode" in
  fail) echo "iptables: lab fault injected into call $n" >&2; exit 1 ;;
  fail-from) touch {control}.broken; echo "iptables: lab fault injected into call $n" >&2; exit 1 ;;
  term) kill -TERM "$PPID"; exec -a "$name" {real} "$@" ;;
  kill) (exec -a "$name" {real} "$@"); kill -KILL "$PPID"; exit 0 ;;
esac
"""
