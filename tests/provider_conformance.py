"""Conformance checks that every Provider must pass, whatever it runs replicas on.

In the manner of Terraform's state-manager conformance tests: a provider's own test module
builds a `Harness` (the provider, a way to make replica specs, a way to reopen the provider
as a later `declare` run would, and a way to make a replica die behind the provider's back)
in a `harness` fixture, and subclasses `Conformance` (every check) or `ReplicaConformance`
(all but the build check) as `TestConformance`, so pytest runs the checks as its tests:

    @pytest.fixture
    def harness(...) -> conformance.Harness:
        return conformance.Harness.reopening(provider, context, make_spec, kill)

    class TestConformance(conformance.Conformance):
        pass

`run_all(harness)` and the single `check_*` functions serve other callers.

The contract checked here, beyond the Protocol's signatures:
- start_replica returns a handle naming the provider, endpoint, entity and generation of the
  spec, with `data["labels"]` equal to the spec's labels; the replica is ALIVE at once.
- list_owned, also from a fresh provider instance on the same context (no state file), lists
  every started replica with those labels, dead or alive, until it is stopped.
- a replica that dies is seen as DEAD with a reason, and stays listed (that is drift).
- stop_replica makes it DEAD and unlisted; stopping again is a no-op; logs still answer.
- two replicas of one spec are distinct, and stopping one leaves the other alone.

The checks do not probe readiness (that is the core's job, over HTTP).
"""

from __future__ import annotations

import ipaddress
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from declare.errors import ConfigError
from declare.model import ReplicaHandle, ReplicaSpec
from declare.provider import Liveness, Provider, ProviderContext, ReplicaStatus

__all__ = [
    "Conformance",
    "Harness",
    "ReplicaConformance",
    "check_bad_settings",
    "check_build_info",
    "check_death_is_detected",
    "check_lifecycle",
    "check_replicas_are_distinct",
    "run_all",
]


@dataclass(frozen=True)
class Harness:
    """What the checks need of one provider's tests (see the module docstring)."""

    provider: Provider
    make_spec: Callable[[int], ReplicaSpec]  # replica index -> a spec the provider can start
    reopen: Callable[[], Provider]  # a new instance on the same context: a later declare run
    kill: Callable[[ReplicaHandle], None]  # kill the replica behind the provider's back
    grace_seconds: float = 5.0
    death_timeout: float = 20.0  # how long a killed replica may take to be seen DEAD

    @classmethod
    def reopening(
        cls,
        provider: Provider,
        context: ProviderContext,
        make_spec: Callable[[int], ReplicaSpec],
        kill: Callable[[ReplicaHandle], None],
        grace_seconds: float = 5.0,
        death_timeout: float = 20.0,
    ) -> Harness:
        """A harness whose `reopen` makes a new provider of the same class on `context`."""
        provider_class: Callable[[ProviderContext], Provider] = type(provider)
        return cls(
            provider, make_spec, lambda: provider_class(context), kill, grace_seconds, death_timeout
        )


def wait_for_liveness(
    provider: Provider, handle: ReplicaHandle, want: Liveness, timeout: float
) -> ReplicaStatus:
    """Poll `status` until it says `want` or `timeout` passes; return the last status."""
    deadline = time.monotonic() + timeout
    status = provider.status(handle)
    while status.liveness is not want and time.monotonic() < deadline:
        time.sleep(0.05)
        status = provider.status(handle)
    return status


def _listed(provider: Provider, handle_id: str) -> ReplicaHandle | None:
    for owned in provider.list_owned():
        if owned.id == handle_id:
            return owned
    return None


def _assert_describes(handle: ReplicaHandle, spec: ReplicaSpec, provider: Provider) -> None:
    assert handle.provider == provider.name
    assert (handle.endpoint, handle.entity, handle.generation) == (
        spec.endpoint,
        spec.entity,
        spec.generation,
    )
    assert dict(handle.data.get("labels", {})) == spec.labels, handle.data
    url = urllib.parse.urlparse(handle.url)
    assert url.scheme == "http" and url.hostname, handle.url
    assert ipaddress.ip_address(url.hostname).is_loopback, f"not on loopback: {handle.url}"


def check_bad_settings(
    provider_class: Callable[[ProviderContext], Provider],
    folder: Path,
    settings: Mapping[str, object],
    message: str,
) -> None:
    """Making a provider with bad `settings` raises a ConfigError that matches `message`."""
    context = ProviderContext("proj", folder, folder / "state", settings=settings)
    with pytest.raises(ConfigError, match=message):
        provider_class(context)


def check_build_info(h: Harness) -> None:
    """build_info and build agree on the key; after build, the build is cached."""
    model = h.make_spec(0).model
    info = h.provider.build_info(model, "CPU")
    assert info.key == model.env_hash
    built = h.provider.build(model, "CPU")
    assert built.key == info.key
    assert built.cached
    assert h.provider.build_info(model, "CPU").cached


def check_lifecycle(h: Harness) -> None:
    """start -> ALIVE -> listed (also by a new instance) -> logs -> stop -> DEAD -> unlisted."""
    spec = h.make_spec(0)
    handle = h.provider.start_replica(spec)
    try:
        _assert_describes(handle, spec, h.provider)
        assert h.provider.status(handle).liveness is Liveness.ALIVE

        listed = _listed(h.provider, handle.id)
        assert listed is not None, "list_owned does not list a replica just started"
        _assert_describes(listed, spec, h.provider)
        assert listed == handle

        later = h.reopen()
        relisted = _listed(later, handle.id)
        assert relisted == handle, "a new provider instance does not find the replica"
        assert later.status(relisted).liveness is Liveness.ALIVE

        assert isinstance(h.provider.logs(handle, tail=5), str)
    finally:
        h.provider.stop_replica(handle, h.grace_seconds)

    stopped = h.provider.status(handle)
    assert stopped.liveness is Liveness.DEAD
    assert stopped.reason, "a DEAD status must say why"
    assert _listed(h.provider, handle.id) is None, "a stopped replica is still listed"
    assert _listed(h.reopen(), handle.id) is None

    h.provider.stop_replica(handle, h.grace_seconds)  # idempotent: no error, nothing changes
    assert h.provider.status(handle).liveness is Liveness.DEAD
    assert isinstance(h.provider.logs(handle, tail=5), str)


def check_death_is_detected(h: Harness) -> None:
    """A replica killed behind the provider's back is DEAD with a reason, and still listed."""
    spec = h.make_spec(0)
    handle = h.provider.start_replica(spec)
    try:
        h.kill(handle)
        status = wait_for_liveness(h.provider, handle, Liveness.DEAD, h.death_timeout)
        assert status.liveness is Liveness.DEAD, "a killed replica is still reported ALIVE"
        assert status.reason
        assert _listed(h.reopen(), handle.id) == handle, "a dead replica must stay listed"
    finally:
        h.provider.stop_replica(handle, h.grace_seconds)
    assert _listed(h.provider, handle.id) is None


def check_replicas_are_distinct(h: Harness) -> None:
    """Two replicas get distinct ids; stopping one leaves the other ALIVE and listed."""
    first = h.provider.start_replica(h.make_spec(0))
    second = h.provider.start_replica(h.make_spec(1))
    try:
        assert first.id != second.id
        owned = {o.id for o in h.provider.list_owned()}
        assert {first.id, second.id} <= owned
        h.provider.stop_replica(first, h.grace_seconds)
        assert h.provider.status(second).liveness is Liveness.ALIVE
        owned = {o.id for o in h.provider.list_owned()}
        assert second.id in owned and first.id not in owned
    finally:
        h.provider.stop_replica(first, h.grace_seconds)
        h.provider.stop_replica(second, h.grace_seconds)


def run_all(h: Harness) -> None:
    check_build_info(h)
    check_lifecycle(h)
    check_death_is_detected(h)
    check_replicas_are_distinct(h)


class ReplicaConformance:
    """The replica checks (lifecycle, death, distinct replicas) as pytest tests.

    Subclass it as `TestConformance` in a provider's test module that has a `harness`
    fixture; a provider whose build key is not the model's env hash (docker: an image's
    content hash) uses this one, and tests its builds itself.
    """

    def test_lifecycle(self, harness: Harness) -> None:
        check_lifecycle(harness)

    def test_death_is_detected(self, harness: Harness) -> None:
        check_death_is_detected(harness)

    def test_replicas_are_distinct(self, harness: Harness) -> None:
        check_replicas_are_distinct(harness)


class Conformance(ReplicaConformance):
    """Every conformance check as pytest tests, the build check included."""

    def test_build_info(self, harness: Harness) -> None:
        check_build_info(harness)
