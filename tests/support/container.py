"""Build the repository's Dockerfile for real and run the image read-only, without a registry.

No registry image can be pulled here, and `podman run` is refused by the OCI runtime, so:

1. `mmdebstrap` makes a minimal Debian 12 root filesystem with python3 and its venv module from
   this machine's own apt sources (cached as a tarball under `.cache/container-base/`);
2. `podman import` turns it into a local base image;
3. the wheels are made on the host into the build context (pip in a build container cannot
   verify PyPI's certificate here), resolved for the base image's interpreter, and
   `podman build --isolation chroot` builds the Dockerfile with pip's own settings
   (`PIP_NO_INDEX`, `PIP_FIND_LINKS`) as build arguments;
4. the image runs from `podman image mount`, in a private mount namespace (`unshare -m`) where
   its root is bind-mounted read-only, as the image's numeric user with no_new_privs
   (`setpriv`, `chroot --userspec`), with the image's environment and entrypoint.

Everything made here (images, mounts, temp dirs) is removed by `cleanup()`, also after a failure.
"""

from __future__ import annotations

import contextlib
import email.parser
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

from .processes import kill_process

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_CACHE = REPO_ROOT / ".cache" / "container-base"
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

INSTALL_HINT = "run `scripts/setup-deploy-tools.sh` (apt-get install podman buildah mmdebstrap)"
# Host commands this module runs, and the Debian package of each.
TOOLS: Mapping[str, str] = {
    "podman": "podman",
    "mmdebstrap": "mmdebstrap",
    "git": "git",
    "unshare": "util-linux",
    "setpriv": "util-linux",
    "mount": "mount",
    "chroot": "coreutils",
}

# The base image: Debian 12 with only the essential packages and python3's venv module; no
# documentation, manual pages or translations.
BASE_SUITE = "bookworm"
MMDEBSTRAP_ARGS: Sequence[str] = (
    "--variant=essential",
    "--include=python3-venv",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    # Snapshot mirrors serve Release files past their Valid-Until date.
    '--aptopt=Acquire::Check-Valid-Until "false"',
)
IMAGE_REPOSITORY = "localhost/sidekiq-exporter-test"


class ContainerToolError(RuntimeError):
    """A command of the container tool chain failed; the message has its output."""


def missing_tools() -> list[str]:
    """`command (package)` for each host command that is not installed."""
    return [f"{cmd} ({pkg})" for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]


def run(cmd: Sequence[str], *, timeout: float = 600, **kwargs: Any) -> str:
    """Run `cmd`, return its stdout; ContainerToolError with stdout and stderr on failure."""
    done = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if done.returncode != 0:
        raise ContainerToolError(
            f"{' '.join(cmd)} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )
    return done.stdout


def debian_mirror() -> str:
    """The Debian archive this machine's apt sources use (scripts/lib/private-apt.sh)."""
    lib = REPO_ROOT / "scripts" / "lib" / "private-apt.sh"
    return run(["bash", "-c", f'source "{lib}" && debian_mirror']).strip()


def base_rootfs() -> Path:
    """The cached base tarball; made with mmdebstrap (under a minute) when missing."""
    key = hashlib.sha256("\n".join([BASE_SUITE, *MMDEBSTRAP_ARGS]).encode()).hexdigest()[:12]
    tarball = BASE_CACHE / f"debian-{BASE_SUITE}-python3-{key}.tar"
    if tarball.exists():
        return tarball
    BASE_CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(f"{tarball.stem}.{os.getpid()}.partial.tar")
    mirror = debian_mirror()
    try:
        run(
            [
                "mmdebstrap",
                "--quiet",
                "--format=tar",
                *MMDEBSTRAP_ARGS,
                BASE_SUITE,
                str(partial),
                f"deb {mirror} {BASE_SUITE} main",
            ]
        )
        partial.rename(tarball)
    finally:
        partial.unlink(missing_ok=True)
    return tarball


def new_tag(kind: str) -> str:
    """A tag no other run uses: `<repository>:<kind>-<pid>-<random>`."""
    return f"{IMAGE_REPOSITORY}:{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def remove_orphaned_images() -> None:
    """Remove test images left by runs whose process is gone (killed before their cleanup)."""
    listing = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPOSITORY])
    for ref in listing.split():
        pid = ref.rsplit(":", 1)[-1].split("-")[1:2]
        if pid and pid[0].isdigit() and not Path(f"/proc/{pid[0]}").exists():
            subprocess.run(["podman", "rmi", "--force", ref], capture_output=True, check=False)


@contextlib.contextmanager
def mounted(image: str) -> Iterator[Path]:
    """`podman image mount`: the image's root filesystem, read-only, while in the block."""
    path = Path(run(["podman", "image", "mount", image]).strip())
    try:
        yield path
    finally:
        subprocess.run(["podman", "image", "unmount", image], capture_output=True, check=False)


# --- wheels for the image's interpreter ------------------------------------------------------

_TARGET_PROBE = """
import json, os, platform, sys
print(json.dumps({
    "markers": {
        "implementation_name": sys.implementation.name,
        "implementation_version": platform.python_version(),
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
    "glibc": os.confstr("CS_GNU_LIBC_VERSION"),
}))
"""


@dataclass(frozen=True)
class TargetPython:
    """The interpreter of an image: its environment markers and its glibc."""

    markers: Mapping[str, str]
    glibc: tuple[int, int]

    @classmethod
    def of_image(cls, image: str) -> TargetPython:
        """Ask the image's own `python3`."""
        with mounted(image) as root:
            probe = json.loads(run(["chroot", str(root), "python3", "-c", _TARGET_PROBE]))
        _, version = probe["glibc"].split()
        major, minor = (int(part) for part in version.split(".")[:2])
        return cls(probe["markers"], (major, minor))

    def pip_download_options(self) -> list[str]:
        """`pip download` options that select wheels this interpreter can install."""
        major, minor = self.glibc
        machine = self.markers["platform_machine"]
        version = self.markers["python_full_version"]
        abi = "cp" + "".join(self.markers["python_version"].split("."))
        platforms = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 4, -1)]
        return [
            "--only-binary=:all:",
            f"--python-version={version}",
            "--implementation=cp",
            f"--abi={abi}",
            *(f"--platform={p}" for p in platforms),
        ]


def _requires_dist(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.BytesParser().parsebytes(archive.read(name), headersonly=True)
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def download_wheels(target: TargetPython, requirements: Iterable[str], dest: Path) -> None:
    """Wheels of `requirements` and all their dependencies, as `target` would resolve them.

    pip evaluates environment markers for the interpreter it runs on even with
    `--python-version` (a host Python 3.11.7 skips redis' `async-timeout; python_full_version <
    "3.11.3"`, which Debian 12's 3.11.2 needs), so the dependencies are walked here with the
    target's markers, each round fetched with `--no-deps`. The image's offline `pip install`
    then checks the set is complete and consistent.
    """
    specs: dict[str, SpecifierSet] = {}
    extras: dict[str, set[str]] = {}
    walked: dict[str, set[str]] = {}  # name -> the extras whose requirements were added
    wheels: dict[str, Path] = {}

    def want(requirement: Requirement) -> None:
        name = canonicalize_name(requirement.name)
        specs[name] = specs.get(name, SpecifierSet()) & requirement.specifier
        extras.setdefault(name, set()).update(requirement.extras)

    def applies(requirement: Requirement, extra_names: Iterable[str]) -> bool:
        if requirement.marker is None:
            return True
        return any(
            requirement.marker.evaluate({**target.markers, "extra": extra})
            for extra in ["", *extra_names]
        )

    for line in requirements:
        requirement = Requirement(line)
        if applies(requirement, ()):
            want(requirement)
    while True:
        fetch = [name for name in specs if name not in wheels]
        if fetch:
            before = set(dest.glob("*.whl"))
            run(
                [
                    str(VENV_PYTHON),
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    *target.pip_download_options(),
                    f"--dest={dest}",
                    *(f"{name}{specs[name]}" for name in fetch),
                ]
            )
            for wheel in set(dest.glob("*.whl")) - before:
                wheels[canonicalize_name(parse_wheel_filename(wheel.name)[0])] = wheel
            if unfetched := [name for name in fetch if name not in wheels]:
                raise ContainerToolError(f"pip download fetched no wheel for {unfetched}")
        pending = [name for name in specs if walked.get(name) != extras[name]]
        if not pending:
            return
        for name in pending:
            version = parse_wheel_filename(wheels[name].name)[1]
            if version not in specs[name]:
                raise ContainerToolError(f"{wheels[name].name} does not satisfy {specs[name]}")
            for requirement in _requires_dist(wheels[name]):
                if applies(requirement, extras[name]):
                    want(requirement)
            walked[name] = set(extras[name])


def build_context(target: TargetPython, dest: Path) -> None:
    """The build context: the files git knows (so .dockerignore sees a real tree) plus
    `wheels/` holding the project's wheel, its dependencies and its build requirements."""
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT
    )
    for relative in filter(None, listed.split("\0")):
        source = REPO_ROOT / relative
        if source.is_file():
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / relative)
    wheels = dest / "wheels"
    wheels.mkdir()
    run(
        [
            str(VENV_PYTHON),
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            f"--wheel-dir={wheels}",
            str(dest),
        ]
    )
    (project,) = wheels.glob("sidekiq_exporter-*.whl")
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    build_requires = pyproject["build-system"]["requires"]
    download_wheels(target, [str(r) for r in _requires_dist(project)] + build_requires, wheels)


# --- build, inspect, remove ------------------------------------------------------------------


def build_image(context: Path, base_image: str, tag: str) -> str:
    """`podman build` the context's Dockerfile on `base_image`, offline; returns the log."""
    return run(
        [
            "podman",
            "build",
            "--isolation=chroot",
            # Docker format: the OCI image format has no HEALTHCHECK.
            "--format=docker",
            "--layers=false",
            "--force-rm",
            f"--build-arg=BASE_IMAGE={base_image}",
            "--build-arg=PIP_NO_INDEX=1",
            "--build-arg=PIP_FIND_LINKS=/src/wheels",
            f"--tag={tag}",
            str(context),
        ]
    )


def inspect_image(image: str) -> dict[str, Any]:
    """`podman image inspect` of one image."""
    (info,) = json.loads(run(["podman", "image", "inspect", image]))
    result: dict[str, Any] = info
    return result


def remove_images(*images: str) -> None:
    """Remove the images (missing ones are fine)."""
    for image in images:
        subprocess.run(["podman", "rmi", "--force", image], capture_output=True, check=False)


# --- running the image -----------------------------------------------------------------------

# Runs as root in a new mount namespace: the image's root bind-mounted read-only, /proc and /dev
# inside it, then no_new_privs and the image's numeric user for the command.
_RUN_SCRIPT = """
set -e
root=$1 user=$2
shift 2
{mount} --bind "$root" "$root"
{mount} -o remount,bind,ro "$root"
{mount} -t proc proc "$root/proc"
{mount} --rbind /dev "$root/dev"
exec {setpriv} --no-new-privs --inh-caps=-all {chroot} --userspec="$user" "$root" "$@"
"""


def run_command(root: Path, user: str, command: Sequence[str]) -> list[str]:
    """The host command that runs `command` in the image mounted at `root`, read-only, as
    `user` (`UID:GID`)."""
    script = _RUN_SCRIPT.format(
        mount=shutil.which("mount"), setpriv=shutil.which("setpriv"), chroot=shutil.which("chroot")
    )
    unshare = shutil.which("unshare") or "unshare"
    return [unshare, "--mount", "--propagation=private", "--", "sh", "-c", script, "sh",
            str(root), user, *command]  # fmt: skip


def image_environment(config: Mapping[str, Any]) -> dict[str, str]:
    """The image's `Env`, as a dict."""
    return dict(item.split("=", 1) for item in config.get("Env") or [])


@dataclass
class ReadOnlyContainer:
    """The image's entrypoint running from its mounted root (see `run_command`)."""

    root: Path
    user: str
    command: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ReadOnlyContainer:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                run_command(self.root, self.user, self.command),
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exec(self, command: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run another command in the same image the same way (e.g. its HEALTHCHECK)."""
        return subprocess.run(
            run_command(self.root, self.user, command),
            env=dict(self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, str]:
        """`/proc/<pid>/status` of the running command."""
        text = Path(f"/proc/{self.pid}/status").read_text()
        return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)

    def root_mount_options(self) -> set[str]:
        """Per-mount options of the command's `/` (from `/proc/<pid>/mountinfo`)."""
        for line in Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4] == "/":
                return set(fields[5].split(","))
        raise AssertionError("no / in mountinfo")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM; the exit code (SIGKILL after `timeout`)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_process(self.proc)
        return self.proc.returncode

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


@dataclass
class BuiltImage:
    """An image built from the repository's Dockerfile, and what it took."""

    tag: str
    base_tag: str
    info: dict[str, Any]
    timings: dict[str, float]
    workdir: Path

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.info["Config"]
        return config

    @property
    def size_bytes(self) -> int:
        return int(self.info["Size"])


def build_from_dockerfile() -> Iterator[BuiltImage]:
    """Generator for a fixture: build, yield the image, then remove everything it made."""
    base_tag, tag = new_tag("base"), new_tag("image")
    workdir = Path(tempfile.mkdtemp(prefix="container-test-"))
    timings: dict[str, float] = {}

    def timed(name: str, started: float) -> None:
        timings[name] = round(time.monotonic() - started, 1)

    try:
        remove_orphaned_images()
        started = time.monotonic()
        tarball = base_rootfs()
        timed("base_rootfs", started)
        started = time.monotonic()
        run(["podman", "import", "--quiet", str(tarball), base_tag])
        timed("import", started)
        started = time.monotonic()
        context = workdir / "context"
        context.mkdir()
        build_context(TargetPython.of_image(base_tag), context)
        timed("wheels", started)
        started = time.monotonic()
        log = build_image(context, base_tag, tag)
        timed("build", started)
        (workdir / "build.log").write_text(log)
        yield BuiltImage(tag, base_tag, inspect_image(tag), timings, workdir)
    finally:
        remove_images(tag, base_tag)
        shutil.rmtree(workdir, ignore_errors=True)
