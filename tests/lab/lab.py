"""Local test hosts: Debian bullseye, bookworm or trixie under systemd-nspawn, with systemd as PID 1 and sshd.

The hosts of one release share a debootstrapped root filesystem (built once per release and cached), each
booting from its own overlay mount, on a bridge this script creates with addresses it assigns. They reach
nothing but the bridge: software reaches them through a wheelhouse built on the controller.

    lab.py rootfs [--release R[,R...]]   build the cached root filesystems that are missing
    lab.py up   [--name N] [--hosts K] [--release R[,R...]]
                                         boot K hosts, write the SSH key and the inventory
    lab.py down [--name N]               stop the hosts, unmount, delete the bridge and the state
    lab.py run  [--name N] [--hosts K] [--release R[,R...]] -- CMD ...
                                         up, run CMD with LAB_INVENTORY set, down (also on failure)
    lab.py app-python R                  the Python that app venvs on release R are made with

--release takes one release for every host, or a list handed out in turn (bullseye,bookworm,trixie with
--hosts 3 boots one of each); LAB_RELEASE sets the default, else bookworm. The inventory puts each host in
a debian_<release> group and, where the release's own Python is too old for gunicorn, sets its
gunicorn_python.

Everything started is recorded in the lab's state directory and stopped by PID from there.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LAB_CACHE", "/var/cache/graceful-gunicorn-lab"))
STATE_ROOT = Path(os.environ.get("LAB_STATE", REPO / ".lab"))
MIRROR = os.environ.get("LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = (
    "systemd,systemd-sysv,dbus,python3,python3-venv,openssh-server,iproute2,sudo,procps,curl,ca-certificates,less"
)
# Bullseye's Python is 3.9 and gunicorn 25.1 and newer need 3.10, so its hosts get CPython 3.11 built from
# source under /opt, as a bullseye fleet would install one, and the role's gunicorn_python names it. The
# source is the upstream tarball that Debian's archive serves as python3.11's orig tarball, checked by digest.
PYTHON_SOURCE = {
    "url": "/pool/main/p/python3.11/python3.11_3.11.2.orig.tar.gz",
    "sha256": "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849",
    "dir": "Python-3.11.2",
    "prefix": "/opt/python3.11",
    "build_packages": "build-essential,libssl-dev,zlib1g-dev,libffi-dev,libbz2-dev,liblzma-dev,libsqlite3-dev",
}
# What each release's hosts run: the Python that app venvs are made with, and its version (the wheelhouse
# holds wheels for each).
RELEASES = {
    "bullseye": {"app_python": PYTHON_SOURCE["prefix"] + "/bin/python3.11", "python": "3.11"},
    "bookworm": {"app_python": "/usr/bin/python3", "python": "3.11"},
    "trixie": {"app_python": "/usr/bin/python3", "python": "3.13"},
}
DEFAULT_RELEASE = "bookworm"
# Bumped whenever the rootfs recipe changes, so that a stale cache is rebuilt.
ROOTFS_RECIPE = "4"
BOOT_TIMEOUT = 90


def log(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, **kw)


# ---------------------------------------------------------------- rootfs


def parse_releases(value: str) -> list[str]:
    """A release or a comma-separated list of them, each one the lab knows."""
    releases = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [r for r in releases if r not in RELEASES]
    if not releases or unknown:
        raise SystemExit(f"lab: --release {value!r}: expected one or more of {', '.join(RELEASES)}, comma-separated")
    return releases


def rootfs_path(release: str) -> Path:
    return CACHE / f"rootfs-{release}"


def build_rootfs(release: str) -> None:
    rootfs = rootfs_path(release)
    stamp = rootfs / ".lab-recipe"
    if stamp.exists() and stamp.read_text().strip() == ROOTFS_RECIPE:
        return
    for tool in ("debootstrap", "systemd-nspawn"):
        if not shutil.which(tool):
            sys.exit(f"lab: {tool} is missing: apt-get install debootstrap systemd-container")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"rootfs-{release}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    builds_python = RELEASES[release]["app_python"].startswith(PYTHON_SOURCE["prefix"])
    packages = PACKAGES + ("," + PYTHON_SOURCE["build_packages"] if builds_python else "")
    log(f"debootstrapping {release} into {tmp} (a minute or two)")
    sh(
        "debootstrap",
        "--variant=minbase",
        f"--include={packages}",
        release,
        str(tmp),
        MIRROR,
        stdout=subprocess.DEVNULL,
    )
    if builds_python:
        _build_python(tmp)
    _configure_rootfs(tmp)
    (tmp / ".lab-recipe").write_text(ROOTFS_RECIPE + "\n")
    if rootfs.exists():
        shutil.rmtree(rootfs)
    tmp.rename(rootfs)
    log(f"rootfs ready at {rootfs}")


def _build_python(root: Path) -> None:
    """CPython from source into PYTHON_SOURCE's prefix, compiled inside the root filesystem against its libraries."""
    source = root / "usr/src" / PYTHON_SOURCE["dir"]
    tarball = root / "usr/src/python.tar.gz"
    log(f"building CPython {PYTHON_SOURCE['dir']} into {PYTHON_SOURCE['prefix']} (about ten minutes, once)")
    sh("curl", "-fsS", "--retry", "3", "-o", str(tarball), MIRROR + PYTHON_SOURCE["url"])
    digest = sh("sha256sum", str(tarball), capture_output=True).stdout.split()[0]
    if digest != PYTHON_SOURCE["sha256"]:
        raise SystemExit(f"lab: {PYTHON_SOURCE['url']} has digest {digest}, expected {PYTHON_SOURCE['sha256']}")
    sh("tar", "-C", str(source.parent), "-xzf", str(tarball))
    build = (
        f"cd /usr/src/{PYTHON_SOURCE['dir']} && ./configure --prefix={PYTHON_SOURCE['prefix']} --with-ensurepip=install"
        f" && make -j{os.cpu_count() or 2} && make install"
    )
    build_log = CACHE / "python-build.log"
    # No network inside: everything the build needs is in the tarball and the packages debootstrap installed.
    nspawn = ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit", "--private-network", "--pipe"]
    with build_log.open("w") as out:
        built = subprocess.run(
            [*nspawn, "/bin/sh", "-c", build],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if built.returncode != 0:
        raise SystemExit(f"lab: building CPython failed (exit {built.returncode}); see {build_log}")
    shutil.rmtree(source)
    tarball.unlink()


def _configure_rootfs(root: Path) -> None:
    # Units the hosts need at boot; networkd brings up the static address each host gets.
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("systemd-networkd.service", "ssh.service"):
        link = wants / unit
        if not os.path.lexists(link):
            link.symlink_to(f"/lib/systemd/system/{unit}")
    # Nothing on the hosts may reach for the outside: no apt timers, no resolver.
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "systemd-resolved.service"):
        mask = root / "etc/systemd/system" / unit
        if os.path.lexists(mask):
            mask.unlink()
        mask.symlink_to("/dev/null")
    sshd = root / "etc/ssh/sshd_config.d/lab.conf"
    sshd.write_text("PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")
    # Each host gets its own machine id at first boot (written into its overlay).
    (root / "etc/machine-id").write_text("")
    resolv = root / "etc/resolv.conf"
    if os.path.lexists(resolv):
        resolv.unlink()
    resolv.write_text("")


# ---------------------------------------------------------------- network


class Lab:
    def __init__(self, name: str):
        self.name = name
        self.state = STATE_ROOT / name
        self.bridge = f"gg{name}"[:15]
        # The lab's /24 is chosen when it boots (the first free one from a start its name picks) and
        # recorded in its state, so labs with other names can run side by side.
        self.preferred_octet = 200 + (sum(name.encode()) % 50)
        self.net = ipaddress.ip_network(self.load().get("network") or f"10.213.{self.preferred_octet}.0/24")

    @property
    def gateway(self):
        return self.net.network_address + 1

    def host_addr(self, index: int) -> str:
        return str(self.net.network_address + 10 + index)

    @property
    def meta_path(self) -> Path:
        return self.state / "lab.json"

    def load(self) -> dict:
        if self.meta_path.exists():
            return json.loads(self.meta_path.read_text())
        return {"hosts": [], "bridge": None}

    def save(self, meta: dict) -> None:
        self.meta_path.write_text(json.dumps(meta, indent=2) + "\n")

    # -- up
    def up(self, count: int, releases: list[str]) -> None:
        for release in dict.fromkeys(releases):
            build_rootfs(release)
        if self.meta_path.exists():
            sys.exit(f"lab: {self.name} is already up (state in {self.state}); run 'lab.py down' first")
        self.state.mkdir(parents=True, exist_ok=True)
        self.net = self._free_network()
        meta = {"hosts": [], "bridge": None, "network": str(self.net)}
        self.save(meta)
        try:
            self._make_bridge(meta)
            key = self._make_key()
            for index in range(1, count + 1):
                meta["hosts"].append(self._boot(index, key, releases[(index - 1) % len(releases)]))
                self.save(meta)
            for host in meta["hosts"]:
                self._wait_ready(host, key)
            self._write_inventory(meta, key)
        except BaseException:
            log("boot failed; tearing down what was started")
            self.down()
            raise
        log(f"{count} hosts up: " + ", ".join(h["address"] for h in meta["hosts"]))

    def _free_network(self) -> ipaddress.IPv4Network:
        """The first 10.213.N.0/24 (N from 200 to 249, starting where the name points) with no route yet."""
        routes = json.loads(sh("ip", "-j", "route", "show", capture_output=True).stdout or "[]")
        taken = [ipaddress.ip_network(r["dst"], strict=False) for r in routes if r.get("dst") not in (None, "default")]
        for step in range(50):
            net = ipaddress.ip_network(f"10.213.{200 + (self.preferred_octet - 200 + step) % 50}.0/24")
            if not any(net.overlaps(other) for other in taken):
                return net
        sys.exit("lab: no free 10.213.200-249.0/24 network left; take down other labs first")

    def _make_bridge(self, meta: dict) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        meta["bridge"] = self.bridge
        self.save(meta)
        sh("ip", "addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def _make_key(self) -> Path:
        key = self.state / "id_ed25519"
        if not key.exists():
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"lab-{self.name}", "-f", str(key))
        return key

    def _boot(self, index: int, key: Path, release: str) -> dict:
        name = f"{self.name}-h{index}"
        address = self.host_addr(index)
        base = self.state / name
        upper, work, root = base / "upper", base / "work", base / "root"
        for d in (upper, work, root):
            d.mkdir(parents=True, exist_ok=True)
        host = {"name": name, "address": address, "release": release, "root": str(root), "pid": None, "mounted": False}
        (upper / "etc/systemd/network").mkdir(parents=True, exist_ok=True)
        (upper / "etc/hostname").write_text(name + "\n")
        (upper / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n")
        (upper / "etc/systemd/network/10-lab.network").write_text(
            "[Match]\nName=host0\n\n[Network]\n"
            f"Address={address}/{self.net.prefixlen}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )
        ssh_dir = upper / "root/.ssh"
        ssh_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        auth = ssh_dir / "authorized_keys"
        auth.write_text(Path(f"{key}.pub").read_text())
        auth.chmod(0o600)
        sh(
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={rootfs_path(release)},upperdir={upper},workdir={work}",
            str(root),
        )
        host["mounted"] = True
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        with open(base / "console.log", "w") as console:
            proc = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "-D",
                    str(root),
                    "-M",
                    name,
                    "-b",
                    "--register=no",
                    "--keep-unit",
                    f"--network-bridge={self.bridge}",
                    "--console=passive",
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        host["pid"] = proc.pid
        return host

    def check_route(self, address: str) -> None:
        """Refuse to talk to an address whose route does not go through this lab's bridge."""
        out = sh("ip", "-j", "route", "get", address, capture_output=True).stdout
        dev = json.loads(out)[0].get("dev")
        if dev != self.bridge:
            raise SystemExit(f"lab: route to {address} goes via {dev}, not {self.bridge}; refusing to connect")

    def _wait_ready(self, host: dict, key: Path) -> None:
        self.check_route(host["address"])
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = "unknown"
        while time.monotonic() < deadline:
            if not _alive(host["pid"]):
                raise SystemExit(f"lab: {host['name']} exited during boot; see {self.state / host['name']}/console.log")
            if _port_open(host["address"], 22):
                res = sh(
                    *ssh_cmd(key, host["address"]), "systemctl", "is-system-running", check=False, capture_output=True
                )
                state = res.stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.3)
        raise SystemExit(f"lab: {host['name']} not ready after {BOOT_TIMEOUT}s (state {state})")

    def _write_inventory(self, meta: dict, key: Path) -> None:
        lines = [
            "# Generated by tests/lab/lab.py: the lab's hosts, reachable only over its bridge.",
            "all:",
            "  vars:",
            "    ansible_user: root",
            f"    ansible_ssh_private_key_file: {key}",
            "    ansible_ssh_common_args: >-",
            "      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            "    ansible_python_interpreter: /usr/bin/python3",
            f"    lab_bridge: {self.bridge}",
            "  children:",
            "    gunicorn_hosts:",
            "      hosts:",
        ]
        for host in meta["hosts"]:
            release = RELEASES[host["release"]]
            lines.append(f"        {host['name']}:")
            lines.append(f"          ansible_host: {host['address']}")
            lines.append(f"          lab_release: {host['release']}")
            if release["app_python"] != RELEASES[DEFAULT_RELEASE]["app_python"]:
                lines.append(f"          gunicorn_python: {release['app_python']}")
        for release in dict.fromkeys(h["release"] for h in meta["hosts"]):
            lines.append(f"    debian_{release}:")
            lines.append("      hosts:")
            lines.extend(f"        {h['name']}:" for h in meta["hosts"] if h["release"] == release)
        (self.state / "inventory.yml").write_text("\n".join(lines) + "\n")

    # -- down
    def down(self) -> None:
        meta = self.load()
        for host in meta.get("hosts", []):
            _stop(host.get("pid"), host["name"])
        for host in meta.get("hosts", []):
            root = host.get("root")
            if root and os.path.ismount(root):
                sh("umount", root, check=False)
                if os.path.ismount(root):
                    sh("umount", "-l", root, check=False)
        if meta.get("bridge"):
            sh("ip", "link", "del", meta["bridge"], check=False, stderr=subprocess.DEVNULL)
        if self.state.exists():
            shutil.rmtree(self.state, ignore_errors=True)
        log(f"{self.name} is down")


def ssh_cmd(key: Path, address: str) -> list[str]:
    return [
        "ssh",
        "-i",
        str(key),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=3",
        f"root@{address}",
    ]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _stop(pid: int | None, name: str) -> None:
    if not _alive(pid):
        return
    # SIGTERM makes nspawn halt the container's systemd cleanly.
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(pid):
        _reap(pid)
        time.sleep(0.2)
    if _alive(pid):
        log(f"{name} did not halt in 20s; killing its process group {pid}")
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["rootfs", "up", "down", "run", "inventory", "check-route", "app-python"])
    parser.add_argument("--name", default=os.environ.get("LAB_NAME", "lab"))
    parser.add_argument("--hosts", type=int, default=int(os.environ.get("LAB_HOSTS", "3")))
    parser.add_argument("--release", default=os.environ.get("LAB_RELEASE") or DEFAULT_RELEASE)
    parser.add_argument("addresses", nargs="*", help="for check-route; the release for app-python")
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_intermixed_args(argv[: argv.index("--")] if "--" in argv else argv)
    # Only the commands that boot or build read it: a bad LAB_RELEASE never blocks a teardown.
    releases = parse_releases(args.release) if args.command in ("rootfs", "up", "run", "app-python") else []
    if args.command == "app-python":
        for release in args.addresses or releases:
            print(RELEASES[parse_releases(release)[0]]["app_python"])
        return 0
    if os.geteuid() != 0:
        sys.exit("lab: must run as root (mounts, bridges and containers)")
    lab = Lab(args.name)
    if args.command == "rootfs":
        for release in dict.fromkeys(releases):
            build_rootfs(release)
    elif args.command == "up":
        lab.up(args.hosts, releases)
        print(lab.state / "inventory.yml")
    elif args.command == "down":
        lab.down()
    elif args.command == "inventory":
        print(lab.state / "inventory.yml")
    elif args.command == "check-route":
        for address in args.addresses:
            lab.check_route(address)
    elif args.command == "run":
        cmd = rest
        if not cmd:
            sys.exit("lab: run needs a command after --")
        # Tear down on any exit, including SIGTERM/SIGINT from a CI time-out.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda *_: sys.exit(128 + 15))
        try:
            lab.up(args.hosts, releases)
            env = dict(
                os.environ, LAB_INVENTORY=str(lab.state / "inventory.yml"), LAB_NAME=lab.name, LAB_BRIDGE=lab.bridge
            )
            return subprocess.call(cmd, env=env)
        finally:
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
