#!/usr/bin/env python3
"""The container image, built from ``Dockerfile`` without a Docker engine or a registry, and run as a pod runs it.

Building: buildah (Debian's package; chroot isolation, so no OCI runtime and no daemon) runs the Dockerfile's
own steps. Its storage lives under ``${MIG_EXTENDER_CACHE:-~/.cache/mig-extender}/image/`` (overlay, or vfs
where overlay cannot be mounted), apart from the machine's. The Dockerfile's base (``python:3.11-slim-bookworm``
by digest) cannot be pulled where no registry is reachable, so the build argument ``PYTHON_IMAGE`` points it at
a stand-in made here: Debian bookworm's own python3 (3.11, with venv and ca-certificates) installed by
mmdebstrap from the machine's apt sources, imported into buildah. The stand-in trusts the machine's local CAs
and sets ``SSL_CERT_FILE`` like the machine does, so that the build's downloads (uv, the locked wheels) reach
the package index the way every other download here does. A build is cached by a hash of its context
(Dockerfile, .dockerignore, pyproject.toml, uv.lock, README.md, extender/) and of the stand-in; with overlay
storage, buildah's layer cache also keeps the dependency layer across source changes.

Running: the image's own configuration (user, environment, working directory, entrypoint) applied to its
root filesystem, mounted read-only in a mount namespace of its own, with ``/proc``, a minimal ``/dev`` and,
like the Deployment's emptyDir, a tmpfs on ``/tmp``; ``unshare --root --setuid --setgid`` starts the
entrypoint. Nothing but root can do that, so building and running need root.

CLI::

    python scripts/container_image.py build          # localhost/mig-extender:test: its id, build time, size
    python scripts/container_image.py run -- --help  # the entrypoint with these arguments, read-only

Exit codes: 0 done, 1 the build or the command failed, 3 the builder cannot run on this machine (the reason
is printed). Only the standard library is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/mig-extender:test"
BASE = "localhost/mig-extender-base"
SUITE = "bookworm"
"""The Debian release of the Dockerfile's base (python:3.11-slim-bookworm): its python3 is 3.11."""
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
"""What python:3.11-slim has that the Dockerfile uses: python3 and python, venv with ensurepip, the CAs."""
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
}
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "README.md", "extender")
"""The build context that .dockerignore lets through (tests/image checks the two agree)."""
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
INSTALL_SCRIPT = ROOT / "scripts" / "install-image-tools.sh"
DEVICES = ("null", "zero", "full", "random", "urandom")
BUILD_TIMEOUT_S = 3600.0
STOP_TIMEOUT_S = 15.0


class BuilderUnavailable(RuntimeError):
    """This machine cannot build or run the image (the message says why); not a fault of the Dockerfile."""


class ImageError(RuntimeError):
    """The build or a step around it failed."""


def cache_dir() -> Path:
    cache = os.environ.get("MIG_EXTENDER_CACHE")
    return (Path(cache) if cache else Path.home() / ".cache" / "mig-extender") / "image"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class Buildah:
    """buildah with this project's own storage (``cache_dir()/containers-<driver>``)."""

    driver: str

    @property
    def storage(self) -> Path:
        return cache_dir() / f"containers-{self.driver}"

    def argv(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.storage / "root"),
            "--runroot",
            str(self.storage / "run"),
            "--storage-driver",
            self.driver,
            *args,
        ]

    def __call__(self, *args: str, timeout: float = 300.0) -> str:
        """The command's standard output; ImageError with its output when it fails."""
        result = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise ImageError(f"buildah {shlex.join(args)} failed ({result.returncode}):\n{_tail(result.stderr)}")
        return result.stdout.strip()

    def exists(self, image: str) -> bool:
        result = subprocess.run(
            self.argv("inspect", "--type", "image", image), capture_output=True, text=True, timeout=60, check=False
        )
        return result.returncode == 0

    def config(self, image: str) -> dict[str, Any]:
        """The image's OCI configuration (``config`` of its OCI image config: User, Env, Entrypoint, ...)."""
        inspected = json.loads(self("inspect", "--type", "image", image))
        config: dict[str, Any] = inspected["OCIv1"]["config"]
        return config

    def size(self, image: str) -> int:
        """Bytes of the image's files (its root filesystem, a hard link counted once)."""
        seen: set[tuple[int, int]] = set()
        total = 0
        with self.mounted(image) as rootfs:
            for directory, _, names in os.walk(rootfs):
                for name in names:
                    info = os.lstat(os.path.join(directory, name))
                    if (info.st_dev, info.st_ino) not in seen:
                        seen.add((info.st_dev, info.st_ino))
                        total += info.st_size
        return total

    @contextlib.contextmanager
    def mounted(self, image: str) -> Iterator[Path]:
        """A working container of the image, mounted; removed afterwards."""
        container = self("from", "--pull-never", "--name", f"mig-extender-{os.getpid()}-{time.monotonic_ns()}", image)
        try:
            yield Path(self("mount", container))
        finally:
            with contextlib.suppress(ImageError, subprocess.TimeoutExpired):
                self("umount", container)
            with contextlib.suppress(ImageError, subprocess.TimeoutExpired):
                self("rm", container)


def builder() -> Buildah:
    """buildah with a storage driver that works here: the tools installed (scripts/install-image-tools.sh) if
    missing; overlay, else vfs. BuilderUnavailable when neither can run."""
    if os.geteuid() != 0:
        raise BuilderUnavailable(
            "building and running the image needs root (mmdebstrap, buildah with chroot isolation, mount namespaces)"
        )
    if shutil.which("buildah") is None or shutil.which("mmdebstrap") is None:
        result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            raise BuilderUnavailable(f"buildah and mmdebstrap could not be installed:\n{_tail(result.stderr)}")
    errors = []
    for driver in ("overlay", "vfs"):
        buildah = Buildah(driver)
        try:
            container = buildah("from", "scratch")
            try:
                buildah("mount", container)
            finally:
                buildah("rm", container)
        except ImageError as exc:
            errors.append(f"{driver}: {exc}")
            continue
        _remove_orphans(buildah)
        return buildah
    raise BuilderUnavailable("buildah cannot mount a container here:\n" + "\n".join(errors))


def _remove_orphans(buildah: Buildah) -> None:
    """Working containers that a run killed before its cleanup left behind (their process is gone)."""
    for entry in json.loads(buildah("containers", "--json") or "[]") or []:
        name = str(entry.get("containername", ""))
        owner = name.split("-")[2] if name.startswith("mig-extender-") and name.count("-") >= 3 else ""
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            with contextlib.suppress(ImageError):
                buildah("rm", name)


def _apt_sources() -> Path:
    for path in APT_SOURCES:
        if path.is_file() and path.stat().st_size:
            text = path.read_text()
            if SUITE not in text:
                raise BuilderUnavailable(
                    f"the stand-in base is Debian {SUITE} (the Dockerfile's python:3.11-slim-{SUITE}); "
                    f"{path} names no {SUITE} suite"
                )
            return path
    raise BuilderUnavailable(f"no Debian apt sources ({', '.join(map(str, APT_SOURCES))}) to build the stand-in base")


def _mmdebstrap_argv(sources: Path, archives: Path, tarball: Path) -> list[str]:
    cas = f"{LOCAL_CAS}/*.crt"
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--include=" + ",".join(BASE_PACKAGES),
        # The machine's sources may be a dated snapshot, whose Release files are past their Valid-Until.
        '--aptopt=Acquire::Check-Valid-Until "false"',
        # Like python:3.11-slim: no manual pages, documentation (but the copyrights) or translations.
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        # The downloaded .deb files kept in the cache for the next stand-in (mmdebstrap's own recipe).
        "--skip=essential/unlink",
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {shlex.quote(str(archives))} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {shlex.quote(str(archives))}",
        # The machine's local CAs (the build's downloads go through what the machine trusts).
        f'--customize-hook=for f in {cas}; do [ -e "$f" ] && cp "$f" "$1{LOCAL_CAS}/"; done; '
        'chroot "$1" update-ca-certificates >/dev/null',
        "--format=tar",
        SUITE,
        str(tarball),
        str(sources),
    ]


def stand_in_base(buildah: Buildah) -> str:
    """The stand-in for python:3.11-slim-bookworm, built and imported once per key (packages, sources, CAs)."""
    sources = _apt_sources()
    cache = cache_dir()
    archives = cache / "apt-archives"
    key = hashlib.sha256()
    key.update(json.dumps([_mmdebstrap_argv(sources, archives, Path("-")), BASE_ENV]).encode())
    key.update(sources.read_bytes())
    for ca in sorted(LOCAL_CAS.glob("*.crt")):
        key.update(ca.read_bytes())
    ref = f"{BASE}:{key.hexdigest()[:16]}"
    if buildah.exists(ref):
        return ref
    archives.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=cache) as scratch:
        tarball = Path(scratch) / "rootfs.tar"
        log = cache / "base.log"
        with log.open("w") as out:
            result = subprocess.run(
                _mmdebstrap_argv(sources, archives, tarball),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        if result.returncode != 0:
            raise ImageError(f"mmdebstrap could not make the stand-in base ({log}):\n{_tail(log.read_text())}")
        container = buildah("from", "scratch")
        try:
            buildah("add", container, str(tarball), "/", timeout=900)
            settings = [arg for name, value in BASE_ENV.items() for arg in ("--env", f"{name}={value}")]
            buildah("config", *settings, "--cmd", "python3", container)
            buildah("commit", "--quiet", container, ref, timeout=900)
        finally:
            buildah("rm", container)
    # Chroot isolation is what the build's RUN steps use: if it cannot run a command here, nothing can build.
    container = buildah("from", "--pull-never", ref)
    try:
        buildah("run", "--isolation", "chroot", container, "--", "python3", "-c", "import ensurepip, ssl, venv")
    except ImageError as exc:
        buildah("rmi", ref)
        raise BuilderUnavailable(f"buildah cannot run a command in a container here (chroot isolation): {exc}") from exc
    finally:
        buildah("rm", container)
    return ref


def context_digest() -> str:
    """sha256 over the build context's files (names and contents), without bytecode caches."""
    digest = hashlib.sha256()
    for name in CONTEXT:
        path = ROOT / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class Built:
    image: str
    id: str
    base: str
    seconds: float
    """The build's duration; 0 when the build was cached."""
    size: int
    base_size: int
    log: Path


def build(buildah: Buildah) -> Built:
    """The Dockerfile built on the stand-in base, tagged :data:`IMAGE` (and by its context's hash)."""
    base = stand_in_base(buildah)
    key = hashlib.sha256(f"{context_digest()} {base} {buildah.driver}".encode()).hexdigest()[:16]
    tagged = f"localhost/mig-extender:src-{key}"
    log = cache_dir() / "build.log"
    seconds = 0.0
    if not buildah.exists(tagged):
        started = time.monotonic()
        argv = ["bud", "--isolation", "chroot", "--pull-never", "--build-arg", f"PYTHON_IMAGE={base}"]
        if buildah.driver == "overlay":
            argv.append("--layers")  # vfs copies every layer whole: slower than building without them
        argv += ["--file", str(ROOT / "Dockerfile"), "--tag", tagged, str(ROOT)]
        with log.open("w") as out:
            result = subprocess.run(
                buildah.argv(*argv), stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, check=False
            )
        if result.returncode != 0:
            raise ImageError(f"buildah bud failed ({log}):\n{_tail(log.read_text())}")
        seconds = time.monotonic() - started
        _forget_older_builds(buildah, keep=tagged)
    buildah("tag", tagged, IMAGE)
    return Built(
        image=IMAGE,
        id=buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", IMAGE),
        base=base,
        seconds=seconds,
        size=buildah.size(IMAGE),
        base_size=buildah.size(base),
        log=log,
    )


def _forget_older_builds(buildah: Buildah, keep: str) -> None:
    """Earlier builds' images leave the storage (the layer cache of their build stage stays)."""
    for entry in json.loads(buildah("images", "--json", "--filter", "reference=localhost/mig-extender")):
        names = entry.get("names") or []
        if any(name.startswith("localhost/mig-extender:src-") for name in names) and keep not in names:
            with contextlib.suppress(ImageError):
                buildah("rmi", "--force", entry["id"])


# --- running -------------------------------------------------------------------------------------------------


def _user(config: Mapping[str, Any]) -> tuple[int, int]:
    user = str(config.get("User") or "0")
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit():
        raise ImageError(f"the image's user {user!r} is not numeric (uid:gid): runAsNonRoot cannot check it")
    return int(uid), int(gid or uid)


def _host_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuilderUnavailable(f"{name} (util-linux) is missing")
    return path


def _home(rootfs: Path, uid: int) -> str:
    """HOME as runc sets it when the image sets none: the user's home in the image's /etc/passwd, else /."""
    passwd = rootfs / "etc" / "passwd"
    for line in passwd.read_text().splitlines() if passwd.is_file() else []:
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5] or "/"
    return "/"


_NAMESPACE_SCRIPT = r"""
set -eu
rootfs=$1 root=$2 tmp=$3 workdir=$4 uid=$5 gid=$6
shift 6
"$MOUNT" --bind "$rootfs" "$root"
"$MOUNT" -o remount,bind,ro "$root"
if [ -d "$root/proc" ]; then "$MOUNT" -t proc proc "$root/proc"; fi
if [ -d "$root/dev" ]; then
  "$MOUNT" -t tmpfs -o mode=755,nosuid,size=64k dev "$root/dev"
  for device in $DEVICES; do
    : >"$root/dev/$device"
    "$MOUNT" --bind "/dev/$device" "$root/dev/$device"
  done
fi
if [ -n "$tmp" ]; then "$MOUNT" --bind "$tmp" "$root/tmp"; fi
exec "$UNSHARE" --root="$root" --wd="$workdir" --setuid="$uid" --setgid="$gid" -- "$@"
"""


@contextlib.contextmanager
def started(
    buildah: Buildah,
    image: str,
    args: Sequence[str] | None = None,
    *,
    entrypoint: Sequence[str] | None = None,
    files: Mapping[str, Path] | None = None,
    tmp: bool = True,
    output: IO[str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """The image's entrypoint (or ``entrypoint``) with ``args`` (else the image's CMD), as the image's user,
    with its environment (and HOME as runc adds it) and working directory, on its root filesystem mounted
    read-only; ``/tmp`` a fresh writable directory (the Deployment's emptyDir) holding ``files`` (name -> host
    file) unless ``tmp`` is false. Standard output and error go to pipes, or both to ``output``. Its own
    process group and mount namespace; stopped (SIGTERM, then SIGKILL) on leaving."""
    config = buildah.config(image)
    uid, gid = _user(config)
    env = dict(str(item).partition("=")[::2] for item in config.get("Env") or [])
    command = [*(entrypoint if entrypoint is not None else config.get("Entrypoint") or [])]
    command += args if args is not None else config.get("Cmd") or []
    if not command:
        raise ImageError(f"{image} has no entrypoint and no command")
    with buildah.mounted(image) as rootfs, tempfile.TemporaryDirectory(prefix="mig-extender-run-") as scratch:
        env.setdefault("HOME", _home(rootfs, uid))
        root = Path(scratch) / "root"
        root.mkdir()
        tmp_dir = ""
        if tmp:
            tmp_path = Path(scratch) / "tmp"
            tmp_path.mkdir(mode=0o1777)
            tmp_path.chmod(0o1777)
            for name, source in (files or {}).items():
                shutil.copyfile(source, tmp_path / name)
                (tmp_path / name).chmod(0o644)
            tmp_dir = str(tmp_path)
        elif files:
            raise ImageError("files go into /tmp: tmp=False takes none")
        workdir = str(config.get("WorkingDir") or "/")
        process_env = {
            **env,
            "MOUNT": _host_tool("mount"),
            "UNSHARE": _host_tool("unshare"),
            "DEVICES": " ".join(DEVICES),
        }
        argv = [
            _host_tool("unshare"),
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            _NAMESPACE_SCRIPT,
            "namespace",
            str(rootfs),
            str(root),
            tmp_dir,
            workdir,
            str(uid),
            str(gid),
            # The entrypoint gets exactly the image's environment: env(1) in the image drops the variables
            # that only the mounting shell needs (MOUNT, UNSHARE, DEVICES).
            "/usr/bin/env",
            "-i",
            *(f"{name}={value}" for name, value in env.items()),
            *command,
        ]
        process = subprocess.Popen(
            argv,
            env=process_env,
            stdin=subprocess.DEVNULL,
            stdout=output or subprocess.PIPE,
            stderr=output or subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def run(
    buildah: Buildah,
    image: str,
    args: Sequence[str] | None = None,
    *,
    entrypoint: Sequence[str] | None = None,
    files: Mapping[str, Path] | None = None,
    tmp: bool = True,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """:func:`started`, waited for: its exit code and output."""
    with started(buildah, image, args, entrypoint=entrypoint, files=files, tmp=tmp) as process:
        stdout, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


# --- CLI -----------------------------------------------------------------------------------------------------


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help=f"build {IMAGE} from Dockerfile on the stand-in base")
    run_parser = sub.add_parser("run", help=f"build {IMAGE} if needed, run its entrypoint read-only as its user")
    run_parser.add_argument("args", nargs="*", help="the entrypoint's arguments (default: the image's CMD)")
    options = parser.parse_args(argv)
    try:
        buildah = builder()
        built = build(buildah)
        if options.command == "build":
            took = f"built in {built.seconds:.0f} s" if built.seconds else "cached"
            print(
                f"{built.image} ({built.id[:12]}): {took}; {_mb(built.size)} "
                f"({_mb(built.size - built.base_size)} over the base {built.base}); log {built.log}"
            )
            return 0
        result = run(buildah, built.image, options.args or None)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode
    except BuilderUnavailable as exc:
        print(f"image: the builder cannot run here: {exc}", file=sys.stderr)
        return 3
    except (ImageError, subprocess.TimeoutExpired) as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
