"""Faults in the lab: ufw failing at each step, signals, a killed run, two runs, a broken host.

castwall changes ufw one of two ways, and each fault is tried on both:
"library" (ufw's Python library in castwall's process, the default) and
"cli" (one ufw command per rule, CASTWALL_UFW=cli). The faults come from a
wrapper bind-mounted in the workstation only: over /usr/sbin/ufw for the
command (Lab.inject_ufw_fault), over iptables for the library
(Lab.inject_iptables_fault); the real ufw and iptables do the work.
"""

import fcntl
import os
import re
import selectors
import subprocess
import time

import pytest

pytestmark = pytest.mark.lab


PATHS = ["library", "cli"]


def env(path):
    return {"CASTWALL_UFW": "cli" if path == "cli" else "auto"}


def inject(lab, path, mode, at):
    """Make ufw misbehave at the at-th rule change of the next run on that path."""
    if path == "cli":
        lab.inject_ufw_fault(mode, at)
    else:
        lab.inject_iptables_fault(mode, at)


def snapshot(lab):
    """Everything a run could change: ufw's rule list, its rules file, the running chain, the state file."""
    state = lab.state_dir / "state.json"
    return lab.ufw_added(), lab.user_rules(), lab.running_rules(), state.read_bytes() if state.exists() else None


def six_step_lab(make_lab):
    """Four devices; two have rules for an old port range: setup then deletes 2 and adds 4."""
    lab = make_lab(devices=4)
    lab.ufw("allow", "22/tcp", check=True)
    lab.ufw("allow", "proto", "udp", "from", "192.168.77.103", "to", "any", "port", "40000:50000", check=True)
    lab.set_port_range(40000, 50000)
    first = lab.castwall("setup", "--yes", "--device", lab.devices[0].name, "--device", lab.devices[3].name)
    assert first.returncode == 0, first.stderr
    lab.set_port_range(32768, 60999)
    return lab


@pytest.mark.parametrize("path", PATHS)
def test_ufw_failing_at_any_step_leaves_ufw_and_the_state_file_exactly_as_before(make_lab, path):
    lab = six_step_lab(make_lab)
    before = snapshot(lab)
    plan = lab.castwall("setup", "--dry-run")
    steps = int(re.search(r"ufw commands castwall will run \((\d+)\)", plan.stdout).group(1))
    assert steps == 6, plan.stdout
    for k in range(1, steps + 1):
        inject(lab, path, "fail", k)
        result = lab.castwall("--debug", "setup", "--yes", env=env(path))
        assert result.returncode == 6, (k, result.stderr)
        assert f"step {k} of {steps} failed" in result.stderr
        assert "so ufw is as it was before this run" in result.stderr
        assert ("ufw's Python library" if path == "library" else "the ufw command") in result.stderr
        lab.clear_ufw_fault()
        assert snapshot(lab) == before, k
    done = lab.castwall("setup", "--yes", env=env(path))
    assert done.returncode == 0, done.stderr
    assert len([line for line in lab.ufw_added() if "castwall:" in line]) == 4
    assert lab.running_rules().count("--dports 32768:60999 -j ACCEPT") == 4  # iptables keeps no comments


def test_when_the_undo_fails_too_the_message_names_exactly_what_differs(make_lab):
    lab = six_step_lab(make_lab)
    before, _, _, state_before = snapshot(lab)
    lab.inject_ufw_fault("fail-from", 4)  # steps 1-3 work (2 deletes, 1 add), then ufw breaks for good
    result = lab.castwall("setup", "--yes", env=env("cli"))
    assert result.returncode == 7, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    lab.clear_ufw_fault()
    after = lab.ufw_added()
    added = [line for line in after if line not in before]
    removed = [line for line in before if line not in after]
    assert len(added) == 1 and len(removed) == 2
    still = re.search(r"still allowed \(added by this run\): ([^;]+)", message).group(1)
    gone = re.search(r"no longer allowed \(deleted by this run\): (.+)$", message).group(1)
    def named(lines):
        return {re.search(r"from (\S+) to any port (\S+)", line).expand(r"UDP \2 from \1") for line in lines}

    assert set(still.split(", ")) == named(added) and set(gone.split(", ")) == named(removed)
    assert (lab.state_dir / "state.json").read_bytes() == state_before
    # The next run sees the difference, says so, and repairs it.
    repair = lab.castwall("setup", "--yes")
    assert repair.returncode == 0 and "does not record (an interrupted run?)" in repair.stderr
    assert lab.castwall("status").returncode == 0


def test_in_process_when_the_reload_of_the_undo_fails_the_files_are_back_and_the_message_says_so(make_lab):
    lab = six_step_lab(make_lab)
    before, rules_file, running, state_before = snapshot(lab)
    lab.inject_iptables_fault("fail-from", 4)  # steps 1-3 work, then iptables breaks for good
    result = lab.castwall("setup", "--yes", env=env("library"))
    assert result.returncode == 7, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "step 4 of 6 failed" in message and "'sudo ufw reload' puts the firewall back" in message
    lab.clear_ufw_fault()
    # ufw's files and castwall's state are as before; only the running chain differs ...
    assert (lab.ufw_added(), lab.user_rules()) == (before, rules_file)
    assert (lab.state_dir / "state.json").read_bytes() == state_before
    assert lab.running_rules() != running
    # ... exactly by what the message names, and the reload it suggests puts it back.
    still = re.search(r"still allowed \(added by this run\): ([^;]+)", message).group(1)
    gone = re.search(r"no longer allowed \(deleted by this run\): ([^(]+?) \(", message).group(1)
    assert len(still.split(", ")) == 1 and len(gone.split(", ")) == 2
    def chain_rule(entry):
        port, ip = entry.removeprefix("UDP ").split(" from ")
        return f"-s {ip}/32 -p udp -m multiport --dports {port} -j ACCEPT"

    now = lab.running_rules()
    assert all(chain_rule(e) in now and chain_rule(e) not in running for e in still.split(", "))
    assert all(chain_rule(e) in running and chain_rule(e) not in now for e in gone.split(", "))
    lab.ufw("reload", check=True)
    assert lab.running_rules() == running
    assert lab.castwall("setup", "--yes").returncode == 0
    assert lab.castwall("status").returncode == 0


@pytest.mark.parametrize("path", PATHS)
def test_sigterm_during_apply_undoes_the_run(make_lab, path):
    lab = six_step_lab(make_lab)
    before = snapshot(lab)
    inject(lab, path, "term", 3)
    result = lab.castwall("setup", "--yes", env=env(path))
    assert result.returncode == 130, result.stderr
    assert "interrupted by SIGTERM before step 4 of 6" in result.stderr
    assert "so ufw is as it was before this run" in result.stderr
    lab.clear_ufw_fault()
    assert snapshot(lab) == before


@pytest.mark.parametrize("path", PATHS)
def test_a_run_killed_mid_apply_is_reconciled_by_the_next_runs(make_lab, path):
    lab = six_step_lab(make_lab)
    _, _, _, state_before = snapshot(lab)
    inject(lab, path, "kill", 3)
    killed = lab.castwall("setup", "--yes", env=env(path))
    assert killed.returncode in (-9, 137), killed.returncode
    lab.clear_ufw_fault()
    assert (lab.state_dir / "state.json").read_bytes() == state_before  # it died before saving
    tagged = [line for line in lab.ufw_added() if "castwall:" in line]
    assert len(tagged) == 1  # two old rules deleted, one new added, then the power went

    status = lab.castwall("status", "--no-discover")
    assert status.returncode == 3
    assert "ufw holds a castwall rule for 192.168.77." in status.stdout and "an interrupted run?" in status.stdout
    assert "is missing from ufw" in status.stdout

    setup = lab.castwall("setup", "--yes")
    assert setup.returncode == 0, setup.stderr
    assert "castwall rule(s) the state file does not record (an interrupted run?)" in setup.stderr
    assert "recorded in the state file are no longer in ufw" in setup.stderr
    assert len([line for line in lab.ufw_added() if "castwall:" in line]) == 4
    assert lab.castwall("status").returncode == 0

    # remove after another kill: it deletes by the tags in ufw, whatever the state file says.
    inject(lab, path, "kill", 2)
    assert lab.castwall("remove", "--all", "--yes", env=env(path)).returncode in (-9, 137)
    lab.clear_ufw_fault()
    remove = lab.castwall("remove", "--all", "--yes")
    assert remove.returncode == 0 and "an interrupted run?" not in remove.stderr
    assert "recorded in the state file are no longer in ufw" in remove.stderr
    assert not [line for line in lab.ufw_added() if "castwall:" in line]
    assert lab.castwall("status", "--no-discover").returncode == 0


class Outputs:
    """Both streams of some processes, read as they come (never blocking past a deadline)."""

    def __init__(self, procs):
        self.text = {p.pid: [b"", b""] for p in procs}  # pid -> [stdout, stderr]
        self._sel = selectors.DefaultSelector()
        for p in procs:
            for i, pipe in enumerate((p.stdout, p.stderr)):
                os.set_blocking(pipe.fileno(), False)
                self._sel.register(pipe, selectors.EVENT_READ, (p.pid, i))

    def read_until(self, done, timeout: float) -> bool:
        """Read until done() holds or every stream is at its end; False if the timeout came first."""
        deadline = time.monotonic() + timeout
        while not done() and self._sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in self._sel.select(left):
                pid, i = key.data
                chunk = os.read(key.fileobj.fileno(), 65536)
                if chunk:
                    self.text[pid][i] += chunk
                else:
                    self._sel.unregister(key.fileobj)
        return done()

    def at_end(self) -> bool:
        return not self._sel.get_map()

    def decoded(self) -> dict:
        return {pid: (out.decode(errors="replace"), err.decode(errors="replace")) for pid, (out, err) in self.text.items()}

    def close(self) -> None:
        self._sel.close()


def two_runs_while_locked(lab, *args: str) -> tuple[list[int], dict]:
    """Start two `castwall ARGS` while the test holds castwall's run lock; release it once both say they wait.

    Deterministic: nothing races, as neither run can start before the other
    waits. Returns both exit codes and their (stdout, stderr) by pid.
    """
    env = {"PYTHONPATH": str(lab.dir / "src"), "CASTWALL_STATE_DIR": str(lab.state_dir), "PYTHONDONTWRITEBYTECODE": "1",
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    waiting = b"waiting for another castwall run"
    # castwall flocks /run/castwall.lock in the workstation, where the lab binds lab.dir/ws-run over /run.
    lock = os.open(lab.dir / "ws-run" / "castwall.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    runs, outputs = [], None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(lock, 0)
        os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)  # the holder's pid, which castwall names while it waits
        for _ in range(2):
            runs.append(subprocess.Popen(lab.ws_argv([lab.python, "-m", "castwall", *args]), env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL))
        outputs = Outputs(runs)
        both_wait = outputs.read_until(lambda: all(waiting in err for _, err in outputs.text.values()), timeout=60)
        # Release at once: each run waits at most 10 s (Services.lock_wait) from its first try.
        os.close(lock)  # closing the only descriptor releases the flock
        lock = None
        assert both_wait, outputs.decoded()
        # One run takes the lock; the other gets it after.
        assert outputs.read_until(outputs.at_end, timeout=90), outputs.decoded()
        codes = [r.wait(timeout=30) for r in runs]
    finally:
        if lock is not None:
            os.close(lock)
        for r in runs:
            if r.poll() is None:
                r.kill()
            r.wait()
            r.stdout.close()
            r.stderr.close()
        if outputs is not None:
            outputs.close()
    text = outputs.decoded()
    assert all(err.count(f"waiting for another castwall run (pid {os.getpid()})") == 1 for _, err in text.values()), text
    return codes, text


def test_two_runs_at_once_one_waits_and_no_rule_is_doubled(make_lab):
    lab = make_lab(devices=3)
    codes, text = two_runs_while_locked(lab, "setup", "--yes")
    assert codes == [0, 0], text
    stdout = "".join(out for out, _ in text.values())
    assert stdout.count("Done: 3 ufw change(s)") == 1 and stdout.count("Nothing to change") == 1, text
    tagged = [line for line in lab.ufw_added() if "castwall:" in line]
    assert len(tagged) == len(set(tagged)) == 3, tagged


def test_each_broken_host_gives_one_line_and_its_exit_code(make_lab):
    lab = make_lab(devices=1)
    rules_before = lab.user_rules()

    def one_line(result, code, text):
        assert result.returncode == code, (code, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("castwall: error:")]
        assert len(errors) == 1 and text in errors[0], result.stderr
        assert "Traceback" not in result.stderr

    one_line(lab.castwall("setup", "--yes", root=False), 4, "needs root")
    lab.ws(["ip", "link", "set", "eth0", "multicast", "off"], check=True)
    one_line(lab.castwall("discover"), 12, "no network interface is up with an IPv4 address and multicast")
    one_line(lab.castwall("discover", "--interface", "eth0"), 12, "interface eth0 cannot multicast")
    lab.ws(["ip", "link", "set", "eth0", "multicast", "on"], check=True)
    lab.ws(["ip", "link", "set", "eth0", "down"], check=True)
    one_line(lab.castwall("setup", "--yes"), 12, "no network interface is up")
    lab.ws(["ip", "link", "set", "eth0", "up"], check=True)
    lab.hide_ufw()
    one_line(lab.castwall("setup", "--yes"), 5, "ufw")
    status = lab.castwall("status", "--no-discover")
    assert status.returncode == 3 and "ufw is not installed" in status.stdout
    assert lab.user_rules() == rules_before  # no run got as far as changing a rule


def test_an_empty_lan_is_exit_9_after_a_short_wait(make_lab):
    lab = make_lab(devices=0)  # only the printer
    result = lab.castwall("discover", "--timeout", "3", root=False)
    assert result.returncode == 9 and "no Cast device answered within 3 s" in result.stderr
    setup = lab.castwall("setup", "--yes")
    assert setup.returncode == 9 and "castwall: error: no Cast device answered" in setup.stderr
