"""Docker backend: each workload is a container of the runtime image on one provider's Docker engine.

One Airflow connection (type ``docker``) per provider: a different Docker host is a different provider.
Its ``extra`` says where the engine is and how workloads are reached:

- ``docker_url``: the engine (``unix:///var/run/docker.sock``, ``tcp://host:2376``); default ``$DOCKER_HOST``
  or the local socket.
- ``advertised_host``: the address other hosts reach this engine's workloads at (published in the
  coordinator URL); default the host of a ``tcp://`` URL, else ``127.0.0.1``. Workloads bind all
  interfaces unless it is a loopback address.
- ``mounts``: ``["SRC:DST[:ro]", ...]`` host paths of the Docker host made visible to workloads (a
  provider's data next to its participant: a workload's local dataset must be under one of the DSTs).
- ``tls_ca_cert``, ``tls_client_cert``, ``tls_client_key``: client TLS files for a ``tcp://`` engine.
- ``timeout``: seconds each call to the engine may take (default 60; ``stop`` adds its grace period).
  An engine that cannot be reached or does not answer in time is a :class:`DockerEngineError` naming it.
The connection's host/login/password, when set, are the image registry the docker provider logs in to.

Containers use host networking (the ports the operators chose with ``free_port``; the coordinator's URL
and the storage grants name addresses of the engine's host, and a presigned grant signs its host, so a
network of their own would need storage and coordinator reachable under the same names), run under
``docker-init`` in a sandbox (:func:`sandbox`): read-only root file system (a tmpfs ``/tmp``, the work
directory an anonymous volume removed with the container), every mount read-only, no new privileges, no
capability, and the spec's CPU, memory and process limits (its wall time: ``timeout``). They are labelled
``io.nvfl.*`` (dag id, run id, task id, role, name) and named after the run and workload, so ``start`` is
idempotent and a teardown in any worker finds them. ``stop`` removes the
container; since its logs go with it, ``stop`` first records the exit code and a log tail in
``workload.details`` (``status`` and ``logs`` answer from there afterwards). Secret env reaches the
container's environment only (visible to whoever controls that engine, like its processes' memory); secret
files are copied into its work directory, mode 0400 (not in ``docker inspect``).
"""

from __future__ import annotations

import calendar
import io
import json
import math
import os
import tarfile
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from airflow_nevermined_fl import __version__, ddo, process
from airflow_nevermined_fl.gateway.launchers.base import (
    Labels,
    Launcher,
    Workload,
    WorkloadSpec,
    WorkloadStatus,
    run_key,
)
from airflow_nevermined_fl.netaddr import is_loopback

if TYPE_CHECKING:
    from docker import APIClient

LABEL = "io.nvfl"
LABEL_KEYS = ("dag_id", "run_id", "task_id", "role", "name")
WORKDIR = "/nvfl/work"
DEFAULT_IMAGE = f"{ddo.RUNTIME_IMAGE}:{__version__}"
STOP_TIMEOUT = 10
ENGINE_TIMEOUT = 60.0
"""Seconds one call to the Docker engine may take (the SDK's ``timeout``), unless the connection sets one."""
KEPT_LOG_LINES = 500
STREAMS = ("stdout", "stderr")
"""A follow reads each stream on its own: the engine stamps each one's lines in order as it copies them,
but the two copiers' lines can reach the log slightly out of time order."""
_EXTRA_FIELDS = {
    "docker_url": str,
    "advertised_host": str,
    "mounts": list,
    "tls_ca_cert": str,
    "tls_client_cert": str,
    "tls_client_key": str,
}  # and "timeout": a number


class DockerConfigError(ValueError):
    """The Docker connection's settings are invalid (raised before anything is started)."""


class DockerEngineError(RuntimeError):
    """The Docker engine could not be reached or did not answer within the timeout; names the engine."""


@dataclass(frozen=True)
class DockerTarget:
    """Where one provider's workloads run (from its Docker connection)."""

    url: str
    advertised_host: str
    mounts: tuple[str, ...] = ()
    tls: tuple[str, str, str] | None = None
    registry_login: bool = False
    timeout: float = ENGINE_TIMEOUT

    @classmethod
    def from_extra(cls, extra: dict[str, Any], where: str, registry_login: bool = False) -> DockerTarget:
        for key, value in extra.items():
            expected = _EXTRA_FIELDS.get(key)
            if expected and not isinstance(value, expected):
                raise DockerConfigError(f"{where}.extra.{key}: expected a {expected.__name__}")
        url = extra.get("docker_url") or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if urlparse(url).scheme not in ("unix", "tcp", "http", "https", "ssh"):
            raise DockerConfigError(f"{where}.extra.docker_url: expected unix:// tcp:// https://: {url!r}")
        mounts = tuple(extra.get("mounts") or ())
        for mount in mounts:
            parts = mount.split(":") if isinstance(mount, str) else []
            absolute = len(parts) in (2, 3) and parts[0].startswith("/") and parts[1].startswith("/")
            if not absolute or parts[2:] not in ([], ["ro"], ["rw"]):
                raise DockerConfigError(f"{where}.extra.mounts: expected absolute SRC:DST[:ro]: {mount!r}")
        timeout = extra.get("timeout", ENGINE_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 1e6:
            raise DockerConfigError(f"{where}.extra.timeout: expected a positive number of seconds")
        tls_files = [extra.get(k) for k in ("tls_ca_cert", "tls_client_cert", "tls_client_key")]
        if any(tls_files) and not all(tls_files):
            raise DockerConfigError(f"{where}.extra: give all tls_ca_cert tls_client_cert tls_client_key")
        remote = urlparse(url).hostname if urlparse(url).scheme in ("tcp", "http", "https", "ssh") else None
        return cls(
            url=url,
            advertised_host=extra.get("advertised_host") or remote or "127.0.0.1",
            mounts=mounts,
            tls=tuple(tls_files) if all(tls_files) else None,  # type: ignore[arg-type]
            registry_login=registry_login,
            timeout=float(timeout),
        )


def connection_json(**extra: Any) -> str:
    """A Docker connection in Airflow's JSON form (for ``AIRFLOW_CONN_<ID>``); ``extra`` is validated."""
    DockerTarget.from_extra(extra, "docker connection")
    return json.dumps({"conn_type": "docker", "extra": extra})


def container_name(labels: Labels) -> str:
    return f"nvfl-{labels.run_key()}-{labels.workload_key()}"


def _owner(user: str) -> tuple[int, int] | None:
    """(uid, gid) of an image's ``USER`` given as numbers (``uid[:gid]``; root when empty), else None."""
    uid, _, gid = (user or "0").partition(":")
    gid = gid or uid
    return (int(uid), int(gid)) if uid.isdigit() and gid.isdigit() else None


def _files_tar(files: dict[str, str], secret_files: dict[str, str], user: str) -> bytes:
    """The workload's files (0644) and secret files: 0400 owned by the image's user, or 0444 where the
    image names its user (the engine keeps the archive's owner; the container is the workload's alone)."""
    owner = _owner(user)
    entries = [(name, content, 0o644, (0, 0)) for name, content in files.items()]
    entries += [
        (name, content, 0o400 if owner else 0o444, owner or (0, 0)) for name, content in secret_files.items()
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content, mode, (uid, gid) in entries:
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, int(time.time()), uid, gid
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _BoundedClient:
    """An ``APIClient`` whose transport failures are :class:`DockerEngineError` naming the engine and the
    call; the engine's own answers (``APIError``: ``NotFound``, ``ImageNotFound``...) pass unchanged."""

    def __init__(self, api: APIClient, url: str, timeout: float) -> None:
        self._api, self._url, self._timeout = api, url, timeout

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            import requests
            from docker.errors import APIError, DockerException

            try:
                return attr(*args, **kwargs)
            except APIError:
                raise
            except requests.Timeout as exc:
                raise DockerEngineError(
                    f"docker engine {self._url}: no answer within {self._timeout:g} s to {name}:"
                    f" {type(exc).__name__}"
                ) from None
            except (requests.RequestException, DockerException) as exc:
                raise DockerEngineError(
                    f"docker engine {self._url}: unreachable during {name}: {type(exc).__name__}"
                ) from None

        return call


def sandbox(spec: WorkloadSpec, mounts: tuple[str, ...]) -> dict[str, Any]:
    """The host config of a workload's container (``create_host_config`` keywords) but its network."""
    from docker.types import Mount

    config: dict[str, Any] = {
        "binds": [":".join(m.split(":")[:2] + ["ro"]) for m in mounts],
        "mounts": [Mount(WORKDIR, None, type="volume")],
        "init": True,
        "read_only": True,
        "tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"},
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
    }
    if spec.limits is not None:
        config |= {
            "nano_cpus": int(spec.limits.cpus * 1e9),
            "mem_limit": f"{spec.limits.memory_mb}m",
            "memswap_limit": f"{spec.limits.memory_mb}m",
            "pids_limit": spec.limits.pids,
        }
    return config


def check_dataset(spec: WorkloadSpec, target: DockerTarget, where: str) -> None:
    """Refuse a local dataset no mount of the connection makes visible, before anything is created."""
    path = spec.local_dataset
    if path is None:
        return
    visible = [m.split(":")[1].rstrip("/") + "/" for m in target.mounts]
    if not any(path.startswith(dst) for dst in visible):
        raise DockerConfigError(
            f"{where}.extra.mounts: no mount holds the dataset {path!r} (or give it as an s3:// URL)"
        )


class DockerLauncher(Launcher):
    backend = "docker"

    @cached_property
    def target(self) -> DockerTarget:
        if not self.conn_id:
            return DockerTarget.from_extra({}, "docker connection")
        from airflow.sdk.bases.hook import BaseHook

        conn = BaseHook.get_connection(self.conn_id)
        return DockerTarget.from_extra(conn.extra_dejson, self.conn_id, registry_login=bool(conn.host))

    @property
    def bind_host(self) -> str:  # type: ignore[override]
        return "127.0.0.1" if is_loopback(self.target.advertised_host) else "0.0.0.0"

    @cached_property
    def client(self) -> APIClient:
        """The engine's API client: each call bounded by ``target.timeout``, a lost engine a
        :class:`DockerEngineError`."""
        from airflow.exceptions import AirflowException
        from airflow.providers.docker.hooks.docker import DockerHook
        from docker.errors import APIError, DockerException

        target = self.target
        tls = DockerHook.construct_tls_config(*target.tls) if target.tls else None
        hook = DockerHook(
            docker_conn_id=self.conn_id if target.registry_login else None,
            base_url=target.url,
            version="auto",
            tls=tls,
            timeout=target.timeout,  # type: ignore[arg-type]  # requests takes float seconds
        )
        try:
            api = hook.get_conn()
        except APIError:
            raise
        except (AirflowException, DockerException, OSError) as exc:
            raise DockerEngineError(
                f"docker engine {target.url}: unreachable while connecting (each call bounded by"
                f" {target.timeout:g} s): {type(exc).__name__}"
            ) from None
        return _BoundedClient(api, target.url, target.timeout)  # type: ignore[return-value]

    def _inspect(self, ref: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        try:
            return self.client.inspect_container(ref)
        except NotFound:
            return None

    def _workload(self, info: dict[str, Any]) -> Workload:
        tags = info["Config"]["Labels"]
        return Workload(
            backend=self.backend,
            id=info["Id"],
            labels=Labels(**{k: tags[f"{LABEL}.{k}"] for k in LABEL_KEYS}),
            host=tags[f"{LABEL}.host"],
            started=float(tags[f"{LABEL}.started"]),
            endpoints=json.loads(tags[f"{LABEL}.endpoints"]),
            details={
                "container": info["Name"].lstrip("/"),
                "image": info["Config"]["Image"],
                "docker_url": self.target.url,
                "argv": info["Config"]["Cmd"],
            },
        )

    def start(self, spec: WorkloadSpec) -> Workload:
        from docker.errors import ImageNotFound

        check_dataset(spec, self.target, self.conn_id or "docker connection")
        name = container_name(spec.labels)
        existing = self._inspect(name)
        if existing and existing["State"]["Running"]:
            return self._workload(existing)
        if existing:
            self.client.remove_container(existing["Id"], force=True, v=True)
        host = self.target.advertised_host
        labels = {f"{LABEL}.{k}": getattr(spec.labels, k) for k in LABEL_KEYS} | {
            f"{LABEL}.run_key": spec.labels.run_key(),
            f"{LABEL}.host": host,
            f"{LABEL}.started": repr(time.time()),
            f"{LABEL}.endpoints": json.dumps({n: f"{host}:{p}" for n, p in spec.ports.items()}),
        }
        image = spec.image or DEFAULT_IMAGE
        command = ["python", "-u", "-m", spec.module, *spec.argv(WORKDIR)]
        if spec.limits is not None:  # the wall time: coreutils' timeout under docker-init
            command = ["timeout", "-k", "10", str(math.ceil(spec.limits.wall_time)), *command]
        host_config = self.client.create_host_config(network_mode="host", **sandbox(spec, self.target.mounts))
        try:
            created = self.client.create_container(
                image,
                command=command,
                name=name,
                labels=labels,
                environment={**spec.env, **spec.secret_env},
                working_dir=WORKDIR,
                host_config=host_config,
            )
        except ImageNotFound as err:
            raise DockerConfigError(
                f"image: {image!r} is not on the Docker engine {self.target.url} (`nvfl images build`)"
            ) from err
        if spec.files or spec.secret_files:
            user = self.client.inspect_container(created["Id"])["Config"].get("User") or ""
            archive = _files_tar(spec.files, spec.secret_files, user)
            self.client.put_archive(created["Id"], WORKDIR, archive)
        self.client.start(created["Id"])
        return self._workload(self.client.inspect_container(created["Id"]))

    def status(self, workload: Workload) -> WorkloadStatus:
        info = self._inspect(workload.id)
        if info is None:
            return WorkloadStatus(running=False, exit_code=workload.details.get("exit_code"))
        state = info["State"]
        if state["Running"]:
            return WorkloadStatus(running=True)
        exit_code = None if state["Status"] == "created" else state["ExitCode"]  # never started
        return WorkloadStatus(running=False, exit_code=exit_code)

    def stop(self, workload: Workload) -> None:
        from docker.errors import NotFound

        try:
            self.client.stop(workload.id, timeout=STOP_TIMEOUT)
            workload.details["exit_code"] = self.status(workload).exit_code
            workload.details["log_tail"] = self.logs(workload, KEPT_LOG_LINES)
            self.client.remove_container(workload.id, force=True, v=True)
        except NotFound:
            return

    def logs(self, workload: Workload, tail: int = 100) -> str:
        from docker.errors import NotFound

        try:
            raw = self.client.logs(workload.id, stdout=True, stderr=True, tail=tail)
        except NotFound:
            return "\n".join(str(workload.details.get("log_tail", "")).splitlines()[-tail:])
        return raw.decode(errors="replace").rstrip("\n")

    def log_since(self, workload: Workload, offset: int, final: bool = False) -> tuple[str, int]:
        """Each stream's lines from the millisecond of the last one returned on (the engine's ``since``
        and timestamps), less those already returned in it: each line once, a stream's lines in order
        (the two merged by time), re-reading one millisecond of log per call, not the tail. A removed
        container (stopped by its consumer) has nothing more to follow."""
        from docker.errors import NotFound

        position, new = _unpack(offset), []
        for index, stream in enumerate(STREAMS):
            since_ms, seen = position[2 * index : 2 * index + 2]
            try:
                raw = self.client.logs(
                    workload.id,
                    **{s: s == stream for s in STREAMS},
                    timestamps=True,
                    since=since_ms / 1000 or None,
                )
            except NotFound:
                return "", offset
            *lines, rest = raw.decode(errors="replace").split("\n")
            if final and rest:
                lines.append(rest)
            if len(lines) <= seen:
                continue
            stamps = [_stamp_ns(line) for line in lines]
            last_ms = stamps[-1] // 10**6
            position[2 * index : 2 * index + 2] = [last_ms, sum(s // 10**6 == last_ms for s in stamps)]
            new += [(stamps[i], index, i, lines[i].partition(" ")[2]) for i in range(seen, len(lines))]
        return "".join(line + "\n" for *_, line in sorted(new)), _pack(position)

    def find(self, dag_id: str, run_id: str) -> list[Workload]:
        key = run_key(dag_id, run_id)
        found = self.client.containers(all=True, filters={"label": [f"{LABEL}.run_key={key}"]})
        infos = (self._inspect(c["Id"]) for c in found)
        workloads = [self._workload(info) for info in infos if info]
        return sorted(
            (w for w in workloads if w.labels.dag_id == dag_id and w.labels.run_id == run_id),
            key=lambda w: w.labels.workload_key(),
        )

    def free_port(self) -> int:
        """A free port of this machine: right for an engine on the same host (host networking)."""
        return process.free_port()


def _stamp_ns(line: str) -> int:
    """The engine's timestamp (``2006-01-02T15:04:05.999999999Z``) heading a log line, in ns."""
    whole, _, fraction = line.partition(" ")[0].removesuffix("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 10**9 + int(fraction.ljust(9, "0")[:9])


def _pack(position: list[int]) -> int:
    """A follow position as one int: per stream, the ms its next read starts at (the engine's ``since``)
    and how many lines stamped within that ms were already returned."""
    return sum(value << (64 * i) for i, value in enumerate(position))


def _unpack(offset: int) -> list[int]:
    return [(offset >> (64 * i)) & (2**64 - 1) for i in range(2 * len(STREAMS))]
