"""The Docker sandbox on a real engine: a workload's container has a read-only root file system (a tmpfs
/tmp, its work directory a volume removed with it), every mount read-only, no new privileges, no
capability, and its spec's CPU, memory and process limits; its files still arrive."""

from __future__ import annotations

import uuid
from typing import Any

from airflow_nevermined_fl.gateway.launchers.base import Labels, Limits, WorkloadSpec
from airflow_nevermined_fl.gateway.launchers.docker import WORKDIR, DockerLauncher

LIMITS = Limits(cpus=0.5, memory_mb=256, pids=64, wall_time=600)


def _exec(engine: Any, container: str, code: str) -> tuple[int, str]:
    run = engine.exec_create(container, ["python", "-c", code])
    output = engine.exec_start(run["Id"]).decode(errors="replace")
    return engine.exec_inspect(run["Id"])["ExitCode"], output


def test_a_workload_runs_sandboxed(
    docker_launcher: DockerLauncher, engine: Any, shards: dict[str, Any], runtime_image: str
) -> None:
    labels = Labels("nvfl_sandbox", f"t-{uuid.uuid4().hex[:10]}", "execute", "participant", "p0")
    spec = WorkloadSpec(
        labels=labels,
        module="http.server",  # anything that keeps running
        args=["--bind", "127.0.0.1", "0"],
        files={"hello.txt": "hi"},
        secret_files={"seat": "ticket"},
        image=runtime_image,
        limits=LIMITS,
    )
    workload = docker_launcher.start(spec)
    try:
        info = engine.inspect_container(workload.id)
        host = info["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
        assert (host["NanoCpus"], host["Memory"], host["PidsLimit"]) == (5 * 10**8, 256 * 2**20, 64)
        assert host["Binds"] == [f"{shards['dir']}:{shards['dir']}:ro"]
        assert "/tmp" in host["Tmpfs"]
        (work,) = [mount for mount in info["Mounts"] if mount["Destination"] == WORKDIR]
        assert work["Type"] == "volume" and work["RW"] is True
        assert info["Config"]["Cmd"][:4] == ["timeout", "-k", "10", "600"]

        assert _exec(engine, workload.id, f"print(open('{WORKDIR}/hello.txt').read())") == (0, "hi\n")
        assert _exec(engine, workload.id, f"print(open('{WORKDIR}/seat').read())") == (0, "ticket\n")
        for path in ("/nvfl/x", "/opt/nvfl/x", f"{shards['dir']}/x"):
            code, output = _exec(engine, workload.id, f"open('{path}', 'w')")
            assert code == 1 and "Read-only file system" in output, (path, output)
        assert _exec(engine, workload.id, f"open('{WORKDIR}/out', 'w'); open('/tmp/x', 'w')")[0] == 0
    finally:
        docker_launcher.stop(workload)
    assert docker_launcher._inspect(workload.id) is None
    assert work["Name"] not in {v["Name"] for v in engine.volumes()["Volumes"] or []}
