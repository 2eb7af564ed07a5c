"""Building a model-environment image on the engine, offline, with every step in a log.

The build needs no network inside the engine and works behind a TLS-intercepting proxy:
wheels are resolved on the host, with the host's pip and its CA settings, into a cache
keyed by the requirements' hash (`pip download --only-binary=:all: --python-version 3.11
--platform manylinux...`), then copied into a build container that has no network and
installed with `pip install --no-index --find-links` into a virtualenv at /opt/declare-venv.
The container is committed as the image, so the wheels (removed before the commit) take no
room in it. Every step's output goes to the build log, `state_dir/docker/builds/<key>.log`,
whose tail a failure shows.

What it does not do: decide what goes into the image or its tag (`providers.docker.image`),
decide when to build (the planner), or remember the image (`providers.docker.image_record`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from declare.errors import ProviderError
from providers._shared import exclusive
from providers.docker.errors import found, quietly
from providers.docker.image import ImagePlan

__all__ = ["VENV", "build_image", "fetch_wheels", "tail"]

VENV = "/opt/declare-venv"
WHEELS_IN_CONTAINER = "/tmp/declare-wheels"
# Installs the wheels copied in, checks the scoring server imports, drops the wheels.
INSTALL_SCRIPT = (
    "set -e; "
    f"python3 -m venv {VENV}; "
    f"{VENV}/bin/python -m pip install --no-index --no-cache-dir "
    f"--disable-pip-version-check --find-links {WHEELS_IN_CONTAINER} "
    f"--requirement {WHEELS_IN_CONTAINER}/requirements.txt; "
    f"{VENV}/bin/python -c 'import mlflow.pyfunc.scoring_server, uvicorn'; "
    f"rm -rf {WHEELS_IN_CONTAINER} /root/.cache"
)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class _BuildStepError(Exception):
    """A build step failed; the details are in the build log."""


def fetch_wheels(plan: ImagePlan, cache_root: Path, log: io.TextIOBase) -> Path:
    """The folder of wheels for `plan.requirements`, downloaded on the host once."""
    folder = cache_root / plan.requirements_hash
    # One downloader per cache entry, across threads and processes.
    with exclusive(Path(f"{folder}.lock")):
        if (folder / ".complete").is_file():
            log.write(f"== wheels: cached in {folder}\n")
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        partial = folder.with_name(f"{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        (partial / "requirements.txt").write_text("\n".join(plan.requirements) + "\n")
        _pip_download(plan, partial, log)
        (partial / ".complete").write_text("")
        os.replace(partial, folder)
    return folder


def _pip_download(plan: ImagePlan, dest: Path, log: io.TextIOBase) -> None:
    argv = [
        sys.executable, "-m", "pip", "download",
        "--only-binary=:all:",
        "--python-version", plan.python_version,
        "--implementation", "cp",
        "--abi", "cp" + plan.python_version.replace(".", ""),
        *(arg for p in plan.platforms for arg in ("--platform", p)),
        "--dest", str(dest),
        "--requirement", str(dest / "requirements.txt"),
    ]  # fmt: skip
    log.write("== wheels: " + " ".join(argv) + "\n")
    log.flush()
    started = time.monotonic()
    result = subprocess.run(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    log.write(result.stdout)
    if result.returncode != 0:
        raise _BuildStepError(f"pip download exited with {result.returncode}")
    log.write(f"== wheels: downloaded in {time.monotonic() - started:.1f}s\n")


def _wheels_tar(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(folder), arcname=Path(WHEELS_IN_CONTAINER).name, recursive=True)
    return buffer.getvalue()


def _ensure_base(client: Any, base_image: str, log: io.TextIOBase) -> None:
    import docker.errors

    if found(lambda: client.images.get(base_image)) is not None:
        return
    log.write(f"== base image {base_image} is not on the engine; pulling it\n")
    try:
        client.images.pull(base_image)
    except docker.errors.APIError as exc:
        raise _BuildStepError(
            f"the base image {base_image} is not on the engine and cannot be pulled "
            f"({exc.explanation or exc}); make it there or set providers.docker.base_image"
        ) from None


def _commit_changes(plan: ImagePlan, labels: dict[str, str]) -> list[str]:
    """The Dockerfile-like changes the committed image gets: PATH, env, workdir, labels."""
    return [
        f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV GIT_PYTHON_REFRESH=quiet",
        "ENV PYTHONUNBUFFERED=1",
        "WORKDIR /tmp",
        *(f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()),
        f"LABEL declare.env-key={plan.key}",
    ]


def _install(
    client: Any, plan: ImagePlan, wheels: Path, labels: dict[str, str], log: io.TextIOBase
) -> None:
    """Install the wheels in a container without network and commit it as `plan.tag`."""
    log.write(f"== install (no network): {INSTALL_SCRIPT}\n")
    log.flush()
    container = client.containers.create(
        plan.base_image,
        command=["/bin/sh", "-c", INSTALL_SCRIPT],
        network_mode="none",
        labels={**labels, "declare.build": plan.key},
    )
    try:
        container.put_archive("/tmp", _wheels_tar(wheels))
        container.start()
        result = container.wait()
        log.write(container.logs().decode(errors="replace"))
        code = int(result.get("StatusCode", -1))
        if code != 0:
            raise _BuildStepError(f"installing the requirements exited with {code}")
        repository, tag = plan.tag.rsplit(":", 1)
        container.commit(repository=repository, tag=tag, changes=_commit_changes(plan, labels))
    finally:
        with quietly():
            container.remove(force=True)


def build_image(
    client: Any, plan: ImagePlan, cache_root: Path, log_path: Path, labels: dict[str, str]
) -> float:
    """Build `plan.tag` on the engine; return the seconds it took. ProviderError on failure."""
    import docker.errors

    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        try:
            log.write(f"== build {plan.tag} from {plan.base_image}\n")
            log.write("== requirements:\n" + "".join(f"   {r}\n" for r in plan.requirements))
            _ensure_base(client, plan.base_image, log)
            _install(client, plan, fetch_wheels(plan, cache_root, log), labels, log)
            log.write(f"== built {plan.tag} in {time.monotonic() - started:.1f}s\n")
        except (_BuildStepError, docker.errors.DockerException, OSError) as exc:
            log.write(f"== build failed: {exc}\n")
            log.flush()
            raise ProviderError(
                f"building image {plan.tag} failed: {exc}\n  build log: {log_path}\n"
                "  last lines of the build log:\n"
                + "\n".join(f"    {line}" for line in tail(log_path, 30).splitlines())
            ) from None
    return time.monotonic() - started
