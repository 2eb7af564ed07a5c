"""The fake provider passes the provider conformance checks and its test knobs work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from declare.errors import ConfigError, ProviderError
from declare.model import ReplicaHandle, ReplicaSpec, ResolvedModel
from declare.provider import Liveness, ProviderContext, load_provider
from providers.fake import Call, FakeProvider, reset_worlds
from tests import provider_conformance as conformance

MODEL = ResolvedModel(
    uri="models:/iris@prod",
    pinned_uri="models:/iris/1",
    name="iris",
    version="1",
    alias="prod",
    source="/nowhere/iris/1",
    env_hash="env-aaa",
)


def make_spec(index: int, model: ResolvedModel = MODEL, project: str = "proj") -> ReplicaSpec:
    return ReplicaSpec(
        project=project,
        endpoint="iris",
        entity="iris-1",
        generation="gen1",
        index=index,
        model=model,
    )


@pytest.fixture
def context(tmp_path: Path) -> Iterator[ProviderContext]:
    ctx = ProviderContext(project="proj", project_dir=tmp_path, state_dir=tmp_path / "state")
    yield ctx
    reset_worlds([ctx.state_dir])


@pytest.fixture
def harness(context: ProviderContext) -> conformance.Harness:
    provider = FakeProvider(context)

    def kill(handle: ReplicaHandle) -> None:
        provider.kill(handle.id, "exit code 137")

    return conformance.Harness.reopening(provider, context, make_spec, kill, death_timeout=0.5)


class TestConformance(conformance.Conformance):
    """The provider conformance checks, against the in-memory fake."""


def test_fail_start_raises_for_that_model_only(context: ProviderContext) -> None:
    provider = FakeProvider(context, fail_start={"models:/iris/2"})
    v2 = ResolvedModel(uri="models:/iris/2", pinned_uri="models:/iris/2", source="/x")
    with pytest.raises(ProviderError, match="models:/iris/2"):
        provider.start_replica(make_spec(0, model=v2))
    assert provider.list_owned() == []
    handle = provider.start_replica(make_spec(0))
    assert provider.status(handle).liveness is Liveness.ALIVE


def test_fail_start_and_fail_build_from_settings(tmp_path: Path) -> None:
    ctx = ProviderContext(
        "proj",
        tmp_path,
        tmp_path / "state",
        settings={"fail_start": ["models:/iris/1"], "fail_build": ["env-aaa"]},
    )
    provider = FakeProvider(ctx)
    with pytest.raises(ProviderError, match="fail_start"):
        provider.start_replica(make_spec(0))
    with pytest.raises(ProviderError, match="env-aaa"):
        provider.build(MODEL, "CPU")
    assert not provider.build_info(MODEL, "CPU").cached
    reset_worlds([ctx.state_dir])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"fail_start": "models:/iris/1"}, "fail_start: must be a list"),
        ({"colour": "blue"}, "unknown setting 'colour'"),
    ],
)
def test_bad_settings_are_config_errors(
    tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    conformance.check_bad_settings(FakeProvider, tmp_path, settings, message)


def test_call_log_records_operations_in_order(context: ProviderContext) -> None:
    provider = FakeProvider(context)
    handle = provider.start_replica(make_spec(0))
    provider.status(handle)
    provider.stop_replica(handle, 1.0)
    assert provider.calls == (
        Call("start_replica", "models:/iris/1"),
        Call("status", handle.id),
        Call("stop_replica", handle.id),
    )
    assert provider.ops("stop_replica") == (handle.id,)
    provider.clear_calls()
    assert len(provider.calls) == 0


def test_kill_shows_in_status_reason_and_logs(context: ProviderContext) -> None:
    provider = FakeProvider(context)
    handle = provider.start_replica(make_spec(0))
    provider.kill(handle.id, "OOM killed")
    status = provider.status(handle)
    assert (status.liveness, status.reason) == (Liveness.DEAD, "OOM killed")
    assert "OOM killed" in provider.logs(handle)
    assert provider.alive_ids() == ()
    with pytest.raises(KeyError):
        provider.kill("no-such-replica")


def test_projects_sharing_a_state_dir_see_only_their_replicas(tmp_path: Path) -> None:
    state = tmp_path / "state"
    mine = FakeProvider(ProviderContext("mine", tmp_path, state))
    theirs = FakeProvider(ProviderContext("theirs", tmp_path, state))
    handle = mine.start_replica(make_spec(0, project="mine"))
    assert [h.id for h in mine.list_owned()] == [handle.id]
    assert theirs.list_owned() == []
    reset_worlds([state])


def test_separate_state_dirs_are_separate_worlds(tmp_path: Path) -> None:
    one = FakeProvider(ProviderContext("proj", tmp_path, tmp_path / "a"))
    two = FakeProvider(ProviderContext("proj", tmp_path, tmp_path / "b"))
    one.start_replica(make_spec(0))
    assert two.list_owned() == []
    reset_worlds([tmp_path / "a", tmp_path / "b"])


def test_logs_tail_limits_lines(context: ProviderContext) -> None:
    provider = FakeProvider(context)
    handle = provider.start_replica(make_spec(0))
    provider.kill(handle.id, "first")
    assert provider.logs(handle, tail=1) == "died: first"
    assert provider.logs(handle, tail=0) == ""


def test_registered_as_entry_point_fake(context: ProviderContext) -> None:
    try:
        provider = load_provider("fake", context)
    except ConfigError as exc:
        pytest.fail(
            'pyproject.toml lacks the entry point: fake = "providers.fake:FakeProvider" '
            f'under [project.entry-points."declare.providers"] ({exc})'
        )
    assert isinstance(provider, FakeProvider)
