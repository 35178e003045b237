"""Start and stop ``tritonserver`` on a moduseg model repository.

The binary is the one on the PATH, else the one in the ``nvidia-pytriton``
wheel (extra ``.[serve]``). That wheel's server has only the Python backend;
its Python stub is built per Python version and links libpython, so the
stub matching this interpreter is copied into a backend folder beside the
repository, and ``LD_LIBRARY_PATH`` gets the interpreter's ``lib`` folder and
the wheel's bundled libraries. The server runs in its own process group: on
stop it gets SIGTERM (it unloads the models and ends their stub processes),
then the whole group SIGKILL after a grace period, so nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailableError, InputError


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002
    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics}/metrics"


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_source: Path | None      # the wheel's backends folder (None: the binary's default)
    libs: tuple[str, ...]            # LD_LIBRARY_PATH additions
    stub: Path | None                # the wheel's Python stub for this interpreter


def find_tritonserver() -> TritonInstall:
    """``tritonserver`` on the PATH, else the one in the ``nvidia-pytriton`` wheel."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstall(Path(on_path), None, (), None)
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            "no tritonserver found: none on the PATH and the nvidia-pytriton wheel is not "
            "installed; pip install 'moduseg[serve]' (numpy < 2: use a separate venv, see "
            "docs/guides/serving.md)")
    root = Path(list(spec.submodule_search_locations)[0])
    binary = root / "tritonserver" / "bin" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not binary.is_file():
        raise BackendUnavailableError(f"the nvidia-pytriton wheel at {root} has no "
                                      f"tritonserver binary; reinstall it")
    if not stub.is_file():
        raise BackendUnavailableError(f"the nvidia-pytriton wheel has no Python {version} "
                                      f"backend stub; use Python 3.8-3.13")
    libs = [sysconfig.get_config_var("LIBDIR") or str(Path(sys.base_prefix) / "lib"),
            str(root.parent / "nvidia_pytriton.libs")]
    return TritonInstall(binary, root / "tritonserver" / "backends", tuple(libs), stub)


def prepare_backends(install: TritonInstall, folder: Path) -> Path | None:
    """A backend folder whose Python backend uses the stub of this interpreter."""
    if install.backend_source is None:
        return None
    py = folder / "python"
    shutil.rmtree(folder, ignore_errors=True)
    py.mkdir(parents=True)
    for f in (install.backend_source / "python").iterdir():
        if f.is_file():
            (py / f.name).symlink_to(f)
    shutil.copy2(install.stub, py / "triton_python_backend_stub")
    return folder


def check_port_free(host: str, port: int, what: str) -> None:
    if not 0 < port < 65536:
        raise InputError(f"{what} {port} is not a port number (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            raise InputError(f"{what} {port} on {host} is already in use; pass another "
                             f"{what} or stop what listens there") from None


def free_ports(host: str = "127.0.0.1", n: int = 3) -> list[int]:
    """``n`` ports free right now (for tests and benchmarks)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class TritonServer:
    """``with TritonServer(repo, ports, workdir) as s:`` a ready server; stopped on exit."""

    def __init__(self, repository: str | Path, ports: Ports, workdir: str | Path,
                 install: TritonInstall | None = None, ready_timeout_s: float = 600.0):
        self.repository, self.ports = Path(repository), ports
        self.workdir = Path(workdir)
        self.install = install or find_tritonserver()
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "tritonserver.log"
        # the Python backend's shared-memory regions get this prefix, so stop() can remove
        # what a killed server leaves in /dev/shm
        self.shm_prefix = f"moduseg_{uuid.uuid4().hex[:12]}_"

    def command(self, backends: Path | None) -> list[str]:
        p = self.ports
        cmd = [str(self.install.binary), f"--model-repository={self.repository}",
               f"--http-address={p.host}", f"--http-port={p.http}",
               f"--grpc-address={p.host}", f"--grpc-port={p.grpc}",
               f"--metrics-address={p.host}", f"--metrics-port={p.metrics}",
               "--allow-metrics=true", "--allow-gpu-metrics=false",
               "--disable-auto-complete-config", "--exit-timeout-secs=20",
               "--backend-config=python,shm-default-byte-size=16777216",
               f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]
        if backends is not None:
            cmd.append(f"--backend-directory={backends}")
        return cmd

    def start(self) -> "TritonServer":
        p = self.ports
        for what, port in (("--http-port", p.http), ("--grpc-port", p.grpc),
                           ("--metrics-port", p.metrics)):
            check_port_free(p.host, port, what)
        self.workdir.mkdir(parents=True, exist_ok=True)
        backends = prepare_backends(self.install, self.workdir / "backends")
        env = dict(os.environ)
        if self.install.libs:
            env["LD_LIBRARY_PATH"] = ":".join(
                [*self.install.libs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.command(backends), stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        url = f"http://{self.ports.http_url}/v2/health/ready"
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise BackendUnavailableError(
                    f"tritonserver exited with code {self.proc.returncode} before it was "
                    f"ready; its log: {self.log_path} ({self.log_tail()})")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise BackendUnavailableError(f"tritonserver was not ready after "
                                      f"{self.ready_timeout_s:.0f} s; its log: {self.log_path}")

    def log_tail(self, n: int = 1) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines()
                     if "error" in ln.lower() or "failed" in ln.lower()]
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM, wait, then SIGKILL the whole process group (stubs included)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # whatever of the group is left
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        shm = Path("/dev/shm")
        if shm.is_dir():
            for f in shm.glob(f"{self.shm_prefix}*"):
                f.unlink(missing_ok=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()


def serve_cache(bank_path: str | Path, home=None) -> Path:
    """The cache folder of one bank's repository under the model home."""
    from ..io import sha256_file
    from ..home import model_home

    return model_home(home) / "serve" / sha256_file(bank_path)[:16]
