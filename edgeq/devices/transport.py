"""Devices: where an artifact runs. One small transport interface (push, pull, run, read a
file) over three transports, each driving the real client program:

- ``local``: this machine (``sh``, file copies).
- ``adb`` / ``adb:SERIAL``: an Android phone through the real ``adb`` client (Debian
  package ``adb``); ``$EDGEQ_ADB`` names another executable (the tests' scripted phone).
- ``ssh://[USER@]HOST[:PORT]``: a Linux board through the real ``ssh`` / ``scp``, with
  ``BatchMode=yes`` (never a password prompt), ``ConnectTimeout`` and
  ``StrictHostKeyChecking=accept-new``. ``$EDGEQ_SSH_IDENTITY`` (private key),
  ``$EDGEQ_SSH_KNOWN_HOSTS`` (known_hosts file) and ``$EDGEQ_SSH_OPTIONS`` (extra ``-o``
  options, space separated) override the defaults.

Remote commands are POSIX ``sh`` scripts. Timeouts are in seconds. A transport that loses
its device raises ``DeviceDisconnected`` (exit 3); a command that merely fails returns its
exit status."""
from __future__ import annotations

import glob as _glob
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import NamedTuple

from edgeq.errors import BadInput, RuntimeFailure

# Android ABI names are the canonical ones; `uname -m` names map onto them.
ABI_ALIASES = {"aarch64": "arm64-v8a", "arm64": "arm64-v8a", "armv8l": "armeabi-v7a",
               "armv7l": "armeabi-v7a", "armv7": "armeabi-v7a", "x86_64": "x86_64",
               "amd64": "x86_64", "i686": "x86", "i386": "x86", "riscv64": "riscv64"}


def normalize_abi(name: str) -> str:
    """``aarch64`` -> ``arm64-v8a`` and so on; unknown names are returned lower-cased."""
    n = name.strip().lower()
    return ABI_ALIASES.get(n, n)


class DeviceDisconnected(RuntimeFailure):
    """The device went away (cable pulled, adb server lost it, ssh connection dropped)."""


class Read(NamedTuple):
    """A file's text, or None and why not (``missing``, ``permission denied``, ...)."""

    text: str | None
    reason: str | None


def _classify(msg: str) -> str:
    low = msg.lower()
    if "no such file" in low or "not found" in low:
        return "missing"
    if "permission denied" in low or "operation not permitted" in low:
        return "permission denied"
    return msg.strip().splitlines()[-1] if msg.strip() else "unreadable"


class Device:
    """Base transport. Subclasses define ``_shell_argv`` (the host argv that runs one
    ``sh`` script on the device), ``push``, ``pull`` and ``abi``."""

    kind = "device"
    name = "device"
    tmp_base = "/tmp"

    def __init__(self):
        self._workdir: str | None = None
        self._abi: str | None = None
        self._globs: dict[str, list[str]] = {}

    # -- running commands ------------------------------------------------------------------
    def _shell_argv(self, script: str) -> list[str]:
        raise NotImplementedError

    def start(self, argv: list[str]) -> subprocess.Popen:
        """Start ``argv`` on the device with stdout/stderr as text pipes (for streaming)."""
        return self.start_shell(shlex.join(str(a) for a in argv))

    def start_shell(self, script: str) -> subprocess.Popen:
        try:
            return subprocess.Popen(self._shell_argv(script), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    errors="replace")
        except OSError as e:
            raise RuntimeFailure(f"{self.name}: cannot start the transport: {e}") from None

    def shell(self, script: str, timeout: float | None = 60) -> tuple[int, str, str]:
        """Run an ``sh`` script on the device: (exit status, stdout, stderr)."""
        proc = self.start_shell(script)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeFailure(f"{self.name}: command timed out after {timeout:g} s: "
                                 f"{script[:80]}") from None
        self.check_transport(proc.returncode, err)
        return proc.returncode, out, err

    def run(self, argv: list[str], timeout: float | None = 60) -> tuple[int, str, str]:
        """Run one program on the device: (exit status, stdout, stderr)."""
        return self.shell(shlex.join(str(a) for a in argv), timeout)

    def check_transport(self, rc: int, stderr: str, thorough: bool = False) -> None:
        """Raise DeviceDisconnected when a failed command failed because the device is
        gone (checked with ``alive()``, so a command's own failure is not mistaken).
        ``thorough``: ask ``alive()`` after any failure, not only after a transport error."""
        if rc != 0 and (thorough or self._looks_lost(rc, stderr)) and not self.alive():
            line = (stderr.strip().splitlines() or [f"exit {rc}"])[-1]
            raise DeviceDisconnected(f"{self.name}: device disconnected ({line})")

    def _looks_lost(self, rc: int, stderr: str) -> bool:
        return False

    def alive(self) -> bool:
        return True

    # -- files -----------------------------------------------------------------------------
    def push(self, local: Path | str, remote: str) -> None:
        raise NotImplementedError

    def pull(self, remote: str, local: Path | str) -> None:
        raise NotImplementedError

    def read_files(self, paths: list[str]) -> dict[str, Read]:
        """Several small files in one round trip (sysfs sampling): {path: Read}."""
        if not paths:
            return {}
        mark = f"@@edgeq{uuid.uuid4().hex[:8]}"
        script = (f"for f in {' '.join(shlex.quote(p) for p in paths)}; do "
                  f"printf '\\n{mark} %s\\n' \"$f\"; cat \"$f\" 2>&1; "
                  f"printf '\\n{mark}rc %s\\n' $?; done")
        _, out, _ = self.shell(script, timeout=30)
        out = out.replace("\r\n", "\n")  # adb without the shell protocol sends CRLF
        result = {p: Read(None, "no answer from the device") for p in paths}
        for part in out.split(f"\n{mark} ")[1:]:
            head, _, rest = part.partition("\n")
            body, _, rc = rest.rpartition(f"\n{mark}rc ")
            if head in result:
                ok = rc.strip().startswith("0")
                result[head] = Read(body, None) if ok else Read(None, _classify(body))
        return result

    def read_file(self, path: str) -> Read:
        """One file's text, or None with the reason (missing, permission denied)."""
        return self.read_files([path])[path]

    def glob(self, pattern: str) -> list[str]:
        """Paths matching a shell glob on the device (``*`` only; sorted)."""
        if pattern in self._globs:  # sysfs layouts do not change within a session
            return self._globs[pattern]
        if not re.fullmatch(r"[\w/.*:+@\[\]-]+", pattern):
            raise BadInput(f"unsupported glob pattern {pattern!r}")
        _, out, _ = self.shell(f'for f in {pattern}; do [ -e "$f" ] && echo "$f"; done; true')
        found = self._globs[pattern] = sorted(ln for ln in out.splitlines() if ln.strip())
        return found

    def has_command(self, name: str) -> bool:
        return self.shell(f"command -v {shlex.quote(name)} >/dev/null 2>&1")[0] == 0

    # -- identity and lifetime -------------------------------------------------------------
    def abi(self) -> str:
        """The CPU ABI, Android style: arm64-v8a, armeabi-v7a, x86_64, x86."""
        if self._abi is None:
            rc, out, err = self.run(["uname", "-m"])
            if rc != 0 or not out.strip():
                raise RuntimeFailure(f"{self.name}: cannot tell the CPU ABI (uname -m: "
                                     f"{(err or out).strip() or rc})")
            self._abi = normalize_abi(out)
        return self._abi

    @property
    def workdir(self) -> str:
        """A fresh folder on the device for this session (made on first use)."""
        if self._workdir is None:
            d = f"{self.tmp_base}/edgeq-{uuid.uuid4().hex[:10]}"
            rc, _, err = self.run(["mkdir", "-p", d])
            if rc != 0:
                raise RuntimeFailure(f"{self.name}: cannot create {d}: {err.strip()}")
            self._workdir = d
        return self._workdir

    def cleanup(self) -> None:
        """Remove the session folder; never raises (the device may be gone)."""
        if self._workdir is None:
            return
        try:
            self.run(["rm", "-rf", self._workdir], timeout=30)
        except Exception:  # noqa: BLE001 - best effort on a device that may have vanished
            pass
        self._workdir = None

    def close(self) -> None:
        """End the transport's own resources (an ssh master connection)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


class LocalDevice(Device):
    """This machine. ``fs_root`` maps absolute paths read through ``read_file`` / ``glob``
    under another folder (a recorded sysfs tree in tests); commands run unchanged."""

    kind = "local"
    name = "local"

    def __init__(self, fs_root: Path | str | None = None):
        super().__init__()
        self.fs_root = Path(fs_root) if fs_root else None

    def _map(self, path: str) -> str:
        return str(self.fs_root / path.lstrip("/")) if self.fs_root else path

    def _shell_argv(self, script: str) -> list[str]:
        return ["sh", "-c", script]

    @property
    def workdir(self) -> str:
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="edgeq-")
        return self._workdir

    def cleanup(self) -> None:
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None

    def push(self, local, remote) -> None:
        try:
            shutil.copy2(local, remote)
        except OSError as e:
            raise RuntimeFailure(f"local: cannot copy {local} to {remote}: {e}") from None

    def pull(self, remote, local) -> None:
        self.push(remote, local)

    def read_files(self, paths):
        return {p: self.read_file(p) for p in paths}

    def read_file(self, path: str) -> Read:
        try:
            with open(self._map(path), encoding="utf-8", errors="replace") as f:
                return Read(f.read(), None)
        except FileNotFoundError:
            return Read(None, "missing")
        except PermissionError:
            return Read(None, "permission denied")
        except OSError as e:  # sysfs: EINVAL, ENODATA, EIO from the driver
            return Read(None, e.strerror or str(e))

    def glob(self, pattern: str) -> list[str]:
        found = _glob.glob(self._map(pattern))
        if self.fs_root:
            found = ["/" + str(Path(p).relative_to(self.fs_root)) for p in found]
        return sorted(found)


class AdbDevice(Device):
    """An Android phone through ``adb -s SERIAL``. Files go to ``/data/local/tmp``."""

    kind = "adb"
    tmp_base = "/data/local/tmp"
    _LOST = re.compile(r"device '.*' not found|no devices/emulators found|device offline|"
                       r"error: closed|protocol fault|device still authorizing|"
                       r"connection reset", re.I)

    def __init__(self, serial: str | None = None, adb: str | None = None):
        super().__init__()
        self.adb = adb or adb_executable()
        devices = list_adb_devices(self.adb)
        if serial is None:
            if not devices:
                raise RuntimeFailure("no Android device attached (adb devices lists none)")
            if len(devices) > 1:
                listed = ", ".join(f"{s} ({st})" for s, st in devices)
                raise BadInput(f"--device adb: {len(devices)} Android devices attached "
                               f"({listed}); pick one with --device adb:SERIAL")
            serial, state = devices[0]
        else:
            state = dict(devices).get(serial)
            if state is None:
                listed = ", ".join(s for s, _ in devices) or "none"
                raise RuntimeFailure(f"Android device '{serial}' is not attached "
                                     f"(adb devices lists: {listed})")
        if state != "device":
            hint = {"unauthorized": "unlock the phone and accept the USB debugging prompt",
                    "offline": "reconnect the cable or run 'adb reconnect'"}.get(
                        state, "it must be booted with USB debugging on")
            raise RuntimeFailure(f"Android device '{serial}' is {state}: {hint}")
        self.serial = serial
        self.name = f"adb:{serial}"

    def _cmd(self, *args: str) -> list[str]:
        return [self.adb, "-s", self.serial, *args]

    def _shell_argv(self, script: str) -> list[str]:
        return self._cmd("shell", script)

    def _looks_lost(self, rc, stderr):
        return rc == 255 or bool(self._LOST.search(stderr or ""))

    def alive(self) -> bool:
        try:
            p = subprocess.run(self._cmd("get-state"), capture_output=True, text=True,
                               timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return p.returncode == 0 and p.stdout.strip() == "device"

    def _transfer(self, verb: str, src: str, dst: str) -> None:
        try:
            p = subprocess.run(self._cmd(verb, src, dst), capture_output=True, text=True,
                               timeout=600)
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(f"{self.name}: adb {verb} {src} timed out") from None
        if p.returncode != 0:
            self.check_transport(255, p.stderr)  # any failed transfer: is the phone there?
            line = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
            raise RuntimeFailure(f"{self.name}: adb {verb} {src} -> {dst} failed: {line}")

    def push(self, local, remote) -> None:
        self._transfer("push", str(local), remote)

    def pull(self, remote, local) -> None:
        self._transfer("pull", remote, str(local))

    def abi(self) -> str:
        if self._abi is None:
            rc, out, err = self.run(["getprop", "ro.product.cpu.abi"])
            if rc != 0 or not out.strip():
                return super().abi()
            self._abi = normalize_abi(out)
        return self._abi


def adb_executable() -> str:
    """``$EDGEQ_ADB`` if set, else ``adb`` from PATH."""
    exe = os.environ.get("EDGEQ_ADB") or shutil.which("adb")
    if not exe or not (os.path.isfile(exe) and os.access(exe, os.X_OK)) and not shutil.which(exe):
        raise RuntimeFailure("the adb client is not installed: apt-get install adb "
                             "(or set EDGEQ_ADB to its path)")
    return exe


def list_adb_devices(adb: str) -> list[tuple[str, str]]:
    """(serial, state) pairs from ``adb devices``; state is ``device``, ``offline``,
    ``unauthorized``, ``recovery``, ``no permissions (...)``..."""
    try:
        p = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeFailure(f"'adb devices' failed: {e}") from None
    if p.returncode != 0:
        line = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        raise RuntimeFailure(f"'adb devices' failed: {line}")
    out = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith(("*", "List of devices")) or "\t" not in line:
            continue
        serial, _, state = line.partition("\t")
        out.append((serial.strip(), state.strip()))
    return out


class SshDevice(Device):
    """A Linux board through ``ssh`` / ``scp``. ``identity``: private key file;
    ``known_hosts``: a known_hosts file (default: ssh's own); ``options``: extra ``-o``
    values such as ``"ServerAliveInterval=5"``; ``connect_timeout`` in seconds.

    The first connection becomes a multiplexing master (``ControlPersist`` 60 s, socket in
    a private temp folder) so that each later command, sysfs sample or copy costs a few
    ms instead of a key exchange; ``close()`` ends it, and it ends by itself when idle."""

    kind = "ssh"

    def __init__(self, user: str | None, host: str, port: int = 22, identity: str | None = None,
                 known_hosts: str | None = None, options: list[str] | tuple = (),
                 connect_timeout: int = 10):
        super().__init__()
        for tool in ("ssh", "scp"):
            if not shutil.which(tool):
                raise RuntimeFailure(f"'{tool}' is not installed: apt-get install openssh-client")
        self.user, self.host, self.port = user, host, int(port)
        identity = identity or os.environ.get("EDGEQ_SSH_IDENTITY")
        known_hosts = known_hosts or os.environ.get("EDGEQ_SSH_KNOWN_HOSTS")
        self._mux_dir = tempfile.mkdtemp(prefix="edgeq-ssh-")
        opts = ["BatchMode=yes", f"ConnectTimeout={connect_timeout}",
                "StrictHostKeyChecking=accept-new", "ServerAliveInterval=5",
                "ServerAliveCountMax=3", "LogLevel=ERROR", f"ControlPath={self._mux_dir}/mux"]
        opts += [f"UserKnownHostsFile={known_hosts}"] if known_hosts else []
        opts += ["IdentitiesOnly=yes"] if identity else []
        opts += [*options, *os.environ.get("EDGEQ_SSH_OPTIONS", "").split()]
        self.opts = [a for o in opts for a in ("-o", o)] + (["-i", str(identity)] if identity else [])
        self._dest = f"{user}@{host}" if user else host
        self.name = f"ssh://{self._dest}" + (f":{self.port}" if self.port != 22 else "")
        try:
            self._connect()
        except RuntimeFailure:
            shutil.rmtree(self._mux_dir, ignore_errors=True)
            raise

    def _ssh(self, *extra: str) -> list[str]:
        return ["ssh", *self.opts, *extra, "-p", str(self.port), self._dest]

    def _shell_argv(self, script: str) -> list[str]:
        return self._ssh("-o", "ControlMaster=no") + ["--", "sh -c " + shlex.quote(script)]

    def _connect(self) -> None:
        # The master forks into the background holding this process's stdio: give it a
        # file, not a pipe, or reading the pipe would wait for the master to exit.
        with tempfile.TemporaryFile("w+") as err_f:
            try:
                p = subprocess.run(self._ssh("-o", "ControlMaster=auto",
                                             "-o", "ControlPersist=60") + ["true"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=err_f, timeout=60)
            except subprocess.TimeoutExpired:
                raise RuntimeFailure(f"cannot reach {self.name}: ssh timed out") from None
            err_f.seek(0)
            err = err_f.read().strip()
        if p.returncode == 0:
            return
        line = (err.splitlines() or [f"ssh exit {p.returncode}"])[-1]
        if "Permission denied" in err:
            raise RuntimeFailure(f"{self.name} refused the login ({line}); edgeq never types "
                                 "passwords: install a key (ssh-copy-id) or set EDGEQ_SSH_IDENTITY")
        if "Host key verification failed" in err or "IDENTIFICATION HAS CHANGED" in err:
            raise RuntimeFailure(f"{self.name}: host key does not match known_hosts; check "
                                 "the board and fix the entry (ssh-keygen -R HOST)")
        raise RuntimeFailure(f"cannot reach {self.name}: {line}")

    def close(self) -> None:
        subprocess.run(self._ssh("-O", "exit"), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        shutil.rmtree(self._mux_dir, ignore_errors=True)

    def _looks_lost(self, rc, stderr):
        return rc == 255

    def alive(self) -> bool:
        try:
            p = subprocess.run(self._shell_argv("true"), capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return p.returncode == 0

    def _scp(self, src: str, dst: str) -> None:
        argv = ["scp", "-q", *self.opts, "-o", "ControlMaster=no", "-P", str(self.port), src, dst]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(f"{self.name}: scp {src} timed out") from None
        if p.returncode != 0:
            self.check_transport(255, p.stderr)
            line = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
            raise RuntimeFailure(f"{self.name}: scp {src} -> {dst} failed: {line}")

    def _remote(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}:{path}"

    def push(self, local, remote) -> None:
        self._scp(str(local), self._remote(remote))

    def pull(self, remote, local) -> None:
        self._scp(self._remote(remote), str(local))


_SSH = re.compile(r"ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@/:\s\[\]]+)"
                  r"(?::(?P<port>\d+))?/?")


def open_device(spec: str, **ssh_kw) -> Device:
    """``local``, ``adb``, ``adb:SERIAL`` or ``ssh://[USER@]HOST[:PORT]`` -> a Device.
    BadInput on a malformed spec; RuntimeFailure when the device cannot be reached.
    ``ssh_kw`` go to SshDevice (identity, known_hosts, options, connect_timeout)."""
    spec = (spec or "").strip()
    if spec == "local":
        return LocalDevice()
    if spec == "adb" or spec.startswith("adb:"):
        serial = spec[4:] or None
        if spec.startswith("adb:") and not serial:
            raise BadInput("--device adb: needs a serial after the colon (see 'adb devices')")
        return AdbDevice(serial)
    if spec.startswith("ssh://"):
        m = _SSH.fullmatch(spec)
        if not m:
            raise BadInput(f"--device '{spec}': expected ssh://USER@HOST[:PORT]")
        port = int(m["port"] or 22)
        if not 0 < port < 65536:
            raise BadInput(f"--device '{spec}': port {port} is out of range")
        return SshDevice(m["user"], m["host"].strip("[]"), port, **ssh_kw)
    raise BadInput(f"--device '{spec}': expected local, adb, adb:SERIAL or "
                   "ssh://USER@HOST[:PORT]")
