#!/usr/bin/python3
"""systemctl stand-in for mk8s test hosts (no systemd in the namespaces).

Supports: daemon-reload, enable [--now], disable [--now], start [--no-block],
stop, restart, try-restart, is-active, is-enabled, is-failed, status, show
[-p PROP[,PROP]] [--value], reset-failed, cat.  Other verbs fail like an
unknown verb.  Units are looked up in /etc/systemd/system,
/usr/local/lib/systemd/system, /usr/lib/systemd/system, /lib/systemd/system.

`start` stops the units its unit `Conflicts=` with, runs `ExecCondition=` (exit 1-254:
the unit is skipped, not failed, and start succeeds) and `ExecStartPre=` (a failure
fails the unit unless the command has a `-` prefix), then the service.  A Type=notify
unit is "activating" until the service sends READY=1 to $NOTIFY_SOCKET (read by the
unit's supervisor), then "active"; a blocking `start` of it (also of one already
activating) waits for that, for the service to exit (failed), or for a stop or
restart (the job is canceled), with no time limit when TimeoutStartSec= is 0 or
infinity, as the rke2 units set it (else that limit, by default 90 s).  The unit's
lock is not held while a start waits.  On failure start exits 1, prints systemd's
message and the last lines of the unit's log.  Type=exec / simple units are active
once the process runs.  Services run in their own session (they survive the SSH
session), log to /var/log/mk8s-standin/UNIT.log (see the journalctl stand-in), and
keep state under /run/mk8s-systemd.  There is no automatic restart (Restart= is
ignored).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
STATE = "/run/mk8s-systemd"
LOGS = "/var/log/mk8s-standin"
WANTS = "/etc/systemd/system/multi-user.target.wants"
DEFAULT_START_TIMEOUT = 90.0  # systemd DefaultTimeoutStartSec=
QUIET = False


def err(msg: str) -> None:
    print(msg, file=sys.stderr)


def out(msg: str) -> None:
    if not QUIET:
        print(msg)


def norm(unit: str) -> str:
    return unit if "." in unit else unit + ".service"


def find_unit(unit: str) -> str | None:
    for d in UNIT_DIRS:
        p = os.path.join(d, unit)
        if os.path.isfile(p):
            return p
    return None


def parse_unit(path: str, unit: str) -> dict[str, list[str]]:
    """Section.Key -> values (continuation lines joined)."""
    res: dict[str, list[str]] = {}
    section = ""
    with open(path) as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        name = unit.rsplit(".", 1)[0]
        v = v.strip().replace("%N", name).replace("%n", unit)
        res.setdefault(f"{section}.{k.strip()}", []).append(v)
    return res


def read_env_file(path: str, env: dict[str, str]) -> None:
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            k, _, v = line.partition("=")
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            env[k.strip()] = v


def exit_file(unit: str) -> str:
    return os.path.join(STATE, unit + ".exit")


def stopping_file(unit: str) -> str:
    return os.path.join(STATE, unit + ".stopping")


# upstream: systemd/systemd man/systemd.service.xml (Restart=always); differs: no restart here [CONTRACT SC2]
def supervise(unit: str) -> int:
    """Run the service (own session), write its pid, wait, record how it ended."""
    with open(os.path.join(STATE, unit + ".env")) as f:
        spec = json.load(f)
    sock = notify_socket(spec["env"].get("NOTIFY_SOCKET", ""))
    with open(log_file(unit), "ab") as logf:
        try:
            p = subprocess.Popen(
                spec["argv"],
                env=spec["env"],
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
            )
        except OSError as e:
            logf.write(f"{unit}: Failed at step EXEC: {e}\n".encode())
            with open(exit_file(unit), "w") as f:
                f.write("203\n")
            return 0
    with open(pid_file(unit) + ".tmp", "w") as f:
        f.write(f"{p.pid} {proc_start(p.pid)}\n")
    os.replace(pid_file(unit) + ".tmp", pid_file(unit))
    if sock is None:
        mark_ready(unit, spec.get("invocation", ""))
    else:
        args = (sock, unit, spec.get("invocation", ""))
        threading.Thread(target=await_ready, args=args, daemon=True).start()
    rc = p.wait()
    with open(exit_file(unit), "w") as f:
        f.write(f"{rc}\n")
    if rc != 0 and not os.path.exists(stopping_file(unit)):
        with open(failed_file(unit), "w") as f:
            f.write(f"exit-code {rc}\n")
        with open(log_file(unit), "ab") as logf:
            logf.write(f"{unit}: Main process exited, code=exited, status={rc}/FAILURE\n".encode())
    return 0


# upstream: systemd/systemd man/sd_notify.xml (READY=1 on $NOTIFY_SOCKET), man/systemd.service.xml (Type=notify) [CONTRACT SC1]
def notify_socket(path: str) -> socket.socket | None:
    """The unit's notify socket, bound by its supervisor (it lives as long as the
    service, so READY=1 is seen whether or not a `systemctl start` waits)."""
    if not path:
        return None
    with contextlib.suppress(OSError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    return sock


def await_ready(sock: socket.socket, unit: str, invocation: str) -> None:
    while True:
        msg = sock.recv(4096).decode(errors="replace")
        if "READY=1" in msg.split("\n"):
            mark_ready(unit, invocation)
            return


def ready_file(unit: str) -> str:
    return os.path.join(STATE, unit + ".ready")


def mark_ready(unit: str, invocation: str) -> None:
    with open(ready_file(unit) + ".tmp", "w") as f:
        f.write(invocation + "\n")
    os.replace(ready_file(unit) + ".tmp", ready_file(unit))


def invocation_of(unit: str) -> str:
    try:
        with open(os.path.join(STATE, unit + ".env")) as f:
            return str(json.load(f).get("invocation", ""))
    except (OSError, ValueError):
        return ""


def is_ready(unit: str) -> bool:
    try:
        with open(ready_file(unit)) as f:
            return f.read().strip() == invocation_of(unit)
    except OSError:
        return False


def pid_file(unit: str) -> str:
    return os.path.join(STATE, unit + ".pid")


def failed_file(unit: str) -> str:
    return os.path.join(STATE, unit + ".failed")


def log_file(unit: str) -> str:
    return os.path.join(LOGS, unit.rsplit(".", 1)[0] + ".log")


def proc_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return "" if fields[0] in "ZX" else fields[19]
    except (OSError, IndexError):
        return ""


def main_pid(unit: str) -> int:
    try:
        with open(pid_file(unit)) as f:
            pid_s, start = f.read().split()
    except (OSError, ValueError):
        return 0
    pid = int(pid_s)
    return pid if proc_start(pid) == start else 0


def state_of(unit: str) -> str:
    if main_pid(unit):
        return "active" if is_ready(unit) else "activating"
    if os.path.exists(failed_file(unit)):
        return "failed"
    return "inactive"


def tail(path: str, n: int = 10) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def fail_start(unit: str, why: str, reason: str, quiet: bool = False) -> int:
    with open(failed_file(unit), "w") as f:
        f.write(why + "\n")
    with contextlib.suppress(OSError):
        os.unlink(pid_file(unit))
    if quiet:  # --no-block: the job's result is not reported
        return 1
    err(
        f"Job for {unit} failed because {reason}.\n"
        f'See "systemctl status {unit}" and "journalctl -xeu {unit}" for details.'
    )
    last = tail(log_file(unit), 8)
    if last:
        err(f"-- last lines of {log_file(unit)} (mk8s stand-in) --\n{last.rstrip()}")
    return 1


# upstream: systemd/systemd man/systemd.service.xml (Conflicts=, ExecCondition=, ExecStartPre=, Type=notify) [CONTRACT SC1]
def start(unit: str, no_block: bool = False) -> int:
    """Launch the unit (the caller holds its lock); wait_started then waits, unlocked."""
    path = find_unit(unit)
    if not path:
        err(f"Failed to start {unit}: Unit {unit} not found.")
        return 5
    if main_pid(unit):
        return 0
    u = parse_unit(path, unit)
    for other in " ".join(u.get("Unit.Conflicts", [])).split():
        if main_pid(norm(other)):
            stop(norm(other))
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "INVOCATION_ID": os.urandom(16).hex(),
    }
    for ef in u.get("Service.EnvironmentFile", []):
        optional = ef.startswith("-")
        ef = ef.lstrip("-")
        if os.path.isfile(ef):
            read_env_file(ef, env)
        elif not optional:
            return fail_start(unit, "resources", "of unavailable resources or another system error")
    for e in u.get("Service.Environment", []):
        for kv in shlex.split(e):
            k, _, v = kv.partition("=")
            env[k] = v
    execs = u.get("Service.ExecStart", [])
    if not execs:
        err(f"Failed to start {unit}: Unit {unit} has no ExecStart= setting.")
        return 1
    argv = shlex.split(execs[-1].lstrip("-@+!"))
    typ = (u.get("Service.Type") or ["simple"])[-1]
    os.makedirs(LOGS, exist_ok=True)
    with contextlib.suppress(OSError):
        os.unlink(failed_file(unit))
    with open(log_file(unit), "ab") as logf:
        logf.write(f"-- {time.strftime('%b %d %H:%M:%S')} Starting {unit} --\n".encode())
    pre = run_start_pre(unit, u, env, no_block)
    if pre is not None:
        return 0 if no_block else pre
    if typ == "notify":
        env["NOTIFY_SOCKET"] = os.path.join(STATE, unit + ".notify")
    for f in (pid_file(unit), exit_file(unit), stopping_file(unit), ready_file(unit)):
        with contextlib.suppress(OSError):
            os.unlink(f)
    # A detached supervisor runs the service and records how it ended (for is-active).
    timeout = start_timeout(u)
    spec = {"argv": argv, "env": env, "invocation": env["INVOCATION_ID"], "timeout": timeout}
    with open(os.path.join(STATE, unit + ".env"), "w") as f:
        json.dump(spec, f)
    sup = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "__supervise", unit],
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(pid_file(unit)) and not os.path.exists(exit_file(unit)):
        if sup.poll() is not None or time.monotonic() > deadline:
            return fail_start(unit, "exec", "the control process failed at step EXEC")
        time.sleep(0.01)
    if os.path.exists(exit_file(unit)) and not os.path.exists(pid_file(unit)):
        return fail_start(unit, "exec", "the control process failed at step EXEC")
    return 0


# upstream: systemd/systemd man/systemd.service.xml (ExecCondition=: exit 1-254 skips the unit; ExecStartPre=) [CONTRACT SC4]
def run_start_pre(
    unit: str, u: dict[str, list[str]], env: dict[str, str], no_block: bool
) -> int | None:
    """Run ExecCondition= then ExecStartPre= (output to the unit's log).  None: go on
    and start the service; 0: skipped by a condition; 1: the unit failed."""
    desc = (u.get("Unit.Description") or [unit])[-1]
    for key in ("ExecCondition", "ExecStartPre"):
        for line in u.get(f"Service.{key}", []):
            ignore = line.startswith("-")
            rc = control(unit, shlex.split(line.lstrip("-@+!:")), env)
            if rc == 0 or (ignore and key == "ExecStartPre"):
                continue
            if key == "ExecCondition" and 0 < rc < 255:
                log_line(unit, f"{unit}: Skipped due to 'exec-condition'.")
                log_line(unit, f"Condition check resulted in {desc} being skipped.")
                return 0
            log_line(unit, f"{unit}: Control process exited, code=exited, status={rc}/FAILURE")
            log_line(unit, f"{unit}: Failed with result 'exit-code'.")
            log_line(unit, f"Failed to start {desc}.")
            why = "the control process exited with error code"
            return fail_start(unit, "exit-code", why, quiet=no_block)
    return None


def control(unit: str, argv: list[str], env: dict[str, str]) -> int:
    """One control command, its output into the unit's log; its exit status."""
    with open(log_file(unit), "ab") as logf:
        try:
            done = subprocess.run(
                argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=logf, stderr=logf
            )
            return done.returncode
        except OSError as e:
            logf.write(f"{unit}: Failed at step EXEC spawning {argv[0]}: {e}\n".encode())
            return 203


def log_line(unit: str, msg: str) -> None:
    with open(log_file(unit), "ab") as logf:
        logf.write(f"{msg}\n".encode())


_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


# upstream: systemd/systemd man/systemd.service.xml (TimeoutStartSec=0 or infinity: no limit) [CONTRACT SC3]
def start_timeout(u: dict[str, list[str]]) -> float | None:
    """TimeoutStartSec= in seconds; None for no limit (0 or infinity: the rke2 units)."""
    raw = (u.get("Service.TimeoutStartSec") or [""])[-1].strip()
    if not raw:
        return DEFAULT_START_TIMEOUT
    if raw == "infinity":
        return None
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)\s*([a-z]*)", raw):
        total += float(num) * _SECONDS.get(unit or "s", 1)
    return total or None


def wait_started(unit: str) -> int:
    """A blocking start: wait until the unit is active, fails, or its start job is
    canceled (stopped or restarted meanwhile).  Holds no lock."""
    invocation = invocation_of(unit)
    try:
        with open(os.path.join(STATE, unit + ".env")) as f:
            timeout = json.load(f).get("timeout")
    except (OSError, ValueError):
        timeout = DEFAULT_START_TIMEOUT
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if invocation_of(unit) != invocation:
            err(f"Job for {unit} canceled.")
            return 1
        if is_ready(unit):
            return 0
        pid = main_pid(unit)
        if not pid:
            if os.path.exists(stopping_file(unit)) or not os.path.exists(pid_file(unit)):
                err(f"Job for {unit} canceled.")
                return 1
            return fail_start(unit, "exit-code", "the control process exited with error code")
        if deadline is not None and time.monotonic() > deadline:
            kill_unit(unit, pid)
            return fail_start(unit, "timeout", "a timeout was exceeded")
        time.sleep(0.1)


# upstream: rancher/rke2 bundle/lib/systemd/system/rke2-server.service (KillMode=process); friendlier [CONTRACT SC5]
def kill_unit(unit: str, pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(OSError):
            os.killpg(pid, sig)
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc_start(pid):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if not proc_start(pid):
            return


def stop(unit: str) -> int:
    if not find_unit(unit) and not os.path.exists(pid_file(unit)):
        err(f"Failed to stop {unit}: Unit {unit} not loaded.")
        return 5
    pid = main_pid(unit)
    if pid:
        open(stopping_file(unit), "w").close()
        kill_unit(unit, pid)
        deadline = time.monotonic() + 5  # let the supervisor record the end
        while not os.path.exists(exit_file(unit)) and time.monotonic() < deadline:
            time.sleep(0.01)
    for f in (pid_file(unit), failed_file(unit)):
        with contextlib.suppress(OSError):
            os.unlink(f)
    return 0


def is_enabled(unit: str) -> str:
    path = find_unit(unit)
    if not path:
        return ""
    return "enabled" if os.path.lexists(os.path.join(WANTS, unit)) else "disabled"


def enable(unit: str) -> int:
    path = find_unit(unit)
    if not path:
        err(f"Failed to enable unit: Unit file {unit} does not exist.")
        return 1
    link = os.path.join(WANTS, unit)
    if not os.path.lexists(link):
        os.makedirs(WANTS, exist_ok=True)
        os.symlink(path, link)
        err(f"Created symlink {link} \u2192 {path}.")
    return 0


def disable(unit: str) -> int:
    link = os.path.join(WANTS, unit)
    if os.path.lexists(link):
        os.unlink(link)
        err(f"Removed {link}.")
    elif not find_unit(unit):
        err(f"Failed to disable unit: Unit file {unit} does not exist.")
        return 1
    return 0


def show(unit: str, props: list[str], value_only: bool) -> int:
    st = state_of(unit)
    loaded = "loaded" if find_unit(unit) else "not-found"
    allp = {
        "Id": unit,
        "LoadState": loaded,
        "ActiveState": st,
        "SubState": {"active": "running", "failed": "failed", "activating": "start"}.get(
            st, "dead"
        ),
        "UnitFileState": is_enabled(unit),
        "MainPID": str(main_pid(unit)),
        "Result": "success" if st != "failed" else "exit-code",
        "FragmentPath": find_unit(unit) or "",
    }
    for k in props or list(allp):
        v = allp.get(k, "")
        print(v if value_only else f"{k}={v}")
    return 0


def status(unit: str) -> int:
    path = find_unit(unit)
    if not path:
        err(f"Unit {unit} could not be found.")
        return 4
    st = state_of(unit)
    en = is_enabled(unit)
    print(f"\u25cf {unit}")
    print(f"     Loaded: loaded ({path}; {en})")
    print(f"     Active: {st}")
    if main_pid(unit):
        print(f"   Main PID: {main_pid(unit)}")
    print()
    print(tail(log_file(unit), 10).rstrip())
    return 0 if st == "active" else 3


def boot() -> int:
    """Start every enabled unit without waiting (what systemd does at boot)."""
    if os.path.isdir(WANTS):
        for unit in sorted(os.listdir(WANTS)):
            start(unit, no_block=True)
    return 0


def main(argv: list[str]) -> int:
    global QUIET
    os.makedirs(STATE, exist_ok=True)
    opts = [a for a in argv if a.startswith("-")]
    args = [a for a in argv if not a.startswith("-")]
    props: list[str] = []
    for i, a in enumerate(argv):
        if a in ("-p", "--property") and i + 1 < len(argv):
            props += argv[i + 1].split(",")
            args.remove(argv[i + 1])
        elif a.startswith("--property="):
            props += a.split("=", 1)[1].split(",")
    QUIET = "-q" in opts or "--quiet" in opts
    now = "--now" in opts
    no_block = "--no-block" in opts
    if not args:
        err("stand-in systemctl: list-units is not supported")
        return 1
    verb, units = args[0], [norm(u) for u in args[1:]]
    if verb == "daemon-reload":
        with open(os.path.join(STATE, "daemon-reload"), "w") as f:
            f.write(f"{time.time()}\n")
        return 0
    if verb == "__boot":
        return boot()
    if verb == "__supervise":
        return supervise(units[0])
    if verb in ("start", "stop", "restart", "try-restart", "enable", "disable") and not units:
        err("Too few arguments.")
        return 1
    rc = 0
    starts = ("start", "restart", "try-restart", "enable")
    waits = [] if no_block or verb not in starts or (verb == "enable" and not now) else units
    for unit in units:
        lock = open(os.path.join(STATE, unit + ".lock"), "w")  # noqa: SIM115
        if verb in ("start", "restart", "try-restart", "stop", "enable", "disable"):
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if verb == "start":
                rc = rc or start(unit, no_block)
            elif verb == "stop":
                rc = rc or stop(unit)
            elif verb == "restart":
                stop(unit)
                rc = rc or start(unit, no_block)
            elif verb == "try-restart":
                if main_pid(unit):
                    stop(unit)
                    rc = rc or start(unit, no_block)
            elif verb == "enable":
                rc = rc or enable(unit)
                if now and not rc:
                    rc = start(unit, no_block)
            elif verb == "disable":
                rc = rc or disable(unit)
                if now:
                    stop(unit)
            # upstream: systemd/systemd man/systemctl.xml (exit status: 3 not active, 5 no such unit) [CONTRACT SC1]
            elif verb == "is-active":
                st = state_of(unit)
                out(st)
                rc = rc or (0 if st == "active" else 3)
            elif verb == "is-failed":
                st = state_of(unit)
                out(st)
                rc = rc or (0 if st == "failed" else 1)
            elif verb == "is-enabled":
                en = is_enabled(unit)
                if not en:
                    err(f"Failed to get unit file state for {unit}: No such file or directory")
                    rc = 1
                else:
                    out(en)
                    rc = rc or (0 if en == "enabled" else 1)
            elif verb == "status":
                rc = rc or status(unit)
            elif verb == "show":
                rc = rc or show(unit, props, "--value" in opts)
            elif verb == "reset-failed":
                with contextlib.suppress(OSError):
                    os.unlink(failed_file(unit))
            elif verb == "cat":
                path = find_unit(unit)
                if not path:
                    err(f"No files found for {unit}.")
                    return 1
                print(f"# {path}")
                with open(path) as f:
                    print(f.read())
            else:
                err(f"Unknown command verb {verb}.")
                return 1
        finally:
            lock.close()
    for unit in waits:  # a start job waits for its unit outside the unit's lock
        if not rc and main_pid(unit):
            rc = wait_started(unit)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
