"""Project settings: declare.yaml > environment > defaults, relative paths, located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from declare.config import load_config
from declare.errors import ConfigError, ManifestError
from declare.ports import GatewaySettings

ENV = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    "MLFLOW_REGISTRY_URI": "sqlite:////srv/registry.db",
}


def write(project: Path, text: str) -> Path:
    (project / "declare.yaml").write_text(text)
    return project


def test_defaults_without_declare_yaml(tmp_path: Path) -> None:
    config = load_config(tmp_path, {})
    assert config.project_name == tmp_path.name
    assert config.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert config.registry_uri == config.tracking_uri
    assert config.state_dir == tmp_path.resolve() / "state"
    assert (config.gateway_host, config.gateway_port) == ("127.0.0.1", 8787)
    assert config.gateway_max_body_bytes == 16 * 1024 * 1024
    assert config.gateway_queue_timeout_seconds == 30
    assert (config.gateway_header_timeout_seconds, config.gateway_idle_timeout_seconds) == (10, 75)
    assert config.gateway_auth_token_env is None
    assert (config.ready_timeout_seconds, config.drain_timeout_seconds) == (180, 30)
    assert config.default_provider == "local"
    assert config.manifest_include == ("*.yaml", "*.yml", "*.json")
    assert config.config_file is None


def test_environment_is_used_when_declare_yaml_sets_no_uri(tmp_path: Path) -> None:
    write(tmp_path, "project: shop\n")
    config = load_config(tmp_path, ENV)
    assert config.tracking_uri == "http://127.0.0.1:5000"
    assert config.registry_uri == "sqlite:////srv/registry.db"


def test_declare_yaml_wins_over_environment(tmp_path: Path) -> None:
    write(tmp_path, "mlflow:\n  tracking_uri: http://127.0.0.1:6000\n")
    config = load_config(tmp_path, ENV)
    assert config.tracking_uri == "http://127.0.0.1:6000"
    # A pinned tracking store keeps the registry with it; the shell's registry is ignored.
    assert config.registry_uri == "http://127.0.0.1:6000"


def test_registry_defaults_to_environment_tracking_uri(tmp_path: Path) -> None:
    config = load_config(tmp_path, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert config.registry_uri == "http://127.0.0.1:5000"


def test_relative_paths_are_relative_to_the_project(tmp_path: Path) -> None:
    write(
        tmp_path,
        "mlflow:\n"
        "  tracking_uri: sqlite:///data/mlflow.db\n"
        "  registry_uri: ./registry\n"
        "state:\n"
        "  path: .declare/state\n",
    )
    root = tmp_path.resolve()
    config = load_config(tmp_path, ENV)
    assert config.tracking_uri == f"sqlite:///{root}/data/mlflow.db"
    assert config.tracking_uri.startswith("sqlite:////")
    assert config.registry_uri == str(root / "registry")
    assert config.state_dir == root / ".declare" / "state"


def test_absolute_sqlite_uri_is_kept(tmp_path: Path) -> None:
    write(tmp_path, "mlflow:\n  tracking_uri: sqlite:////var/lib/mlflow.db\n")
    assert load_config(tmp_path, {}).tracking_uri == "sqlite:////var/lib/mlflow.db"


def test_every_setting_is_read(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
project: shop
gateway:
  host: ::1
  port: 9000
  auth_token_env: SHOP_TOKEN
  max_body_bytes: 1024
  queue_timeout_seconds: 2.5
  header_timeout_seconds: 3
  idle_timeout_seconds: 20.5
default_provider: docker
providers:
  docker:
    base_url: unix:///var/run/docker.sock
timeouts:
  ready_seconds: 60
  drain_seconds: 0
manifests:
  include: ["*.yaml"]
  exclude: ["draft-*"]
""",
    )
    config = load_config(tmp_path, {})
    assert config.project_name == "shop"
    assert (config.gateway_host, config.gateway_port) == ("::1", 9000)
    assert config.gateway_auth_token_env == "SHOP_TOKEN"
    assert config.gateway_auth_token({"SHOP_TOKEN": "s3cret"}) == "s3cret"
    with pytest.raises(ConfigError, match="SHOP_TOKEN"):
        config.gateway_auth_token({})
    assert (config.gateway_max_body_bytes, config.gateway_queue_timeout_seconds) == (1024, 2.5)
    assert (config.gateway_header_timeout_seconds, config.gateway_idle_timeout_seconds) == (3, 20.5)
    assert config.default_provider == "docker"
    assert config.provider_settings("docker") == {"base_url": "unix:///var/run/docker.sock"}
    assert config.provider_settings("local") == {}
    assert (config.ready_timeout_seconds, config.drain_timeout_seconds) == (60, 0)
    assert (config.manifest_include, config.manifest_exclude) == (("*.yaml",), ("draft-*",))


def test_problems_are_located_and_reported_together(tmp_path: Path) -> None:
    write(
        tmp_path,
        "gateway:\n  host: 0.0.0.0\n  port: 70000\ntimeouts:\n  ready_secs: 10\n",
    )
    with pytest.raises(ManifestError) as caught:
        load_config(tmp_path, {})
    assert [str(p) for p in caught.value.problems] == [
        "declare.yaml:2: gateway.host: '0.0.0.0' is not a loopback address: the gateway would "
        "face a network without TLS (this declare cannot serve TLS yet); add 'plaintext' to "
        "gateway.allow_insecure to accept that risk",
        "declare.yaml:2: gateway.host: '0.0.0.0' is not a loopback address: the gateway would "
        "face a network without authentication (no gateway.auth_token_env); add "
        "'unauthenticated' to gateway.allow_insecure to accept that risk",
        "declare.yaml:3: gateway.port: must be a port number from 1 to 65535, got 70000",
        "declare.yaml:5: timeouts.ready_secs: unknown field 'ready_secs'; allowed: "
        "drain_seconds, ready_seconds (did you mean 'ready_seconds'?)",
    ]


def test_a_network_address_needs_each_risk_named(tmp_path: Path) -> None:
    write(tmp_path, "gateway:\n  host: 10.1.2.3\n  auth_token_env: TOKEN\n")
    with pytest.raises(ManifestError) as caught:
        load_config(tmp_path, {})
    [problem] = caught.value.problems
    assert "declare.yaml:2: gateway.host: '10.1.2.3' is not a loopback address" in str(problem)
    assert "add 'plaintext' to gateway.allow_insecure" in str(problem)


def test_a_network_address_with_the_risks_named_is_accepted(tmp_path: Path) -> None:
    write(tmp_path, "gateway:\n  host: 10.1.2.3\n  allow_insecure: [plaintext, unauthenticated]\n")
    assert load_config(tmp_path, {}).gateway_host == "10.1.2.3"
    write(tmp_path, "gateway:\n  host: ::1\n")
    assert load_config(tmp_path, {}).gateway_host == "::1"


def test_allow_insecure_names_known_risks_only(tmp_path: Path) -> None:
    write(tmp_path, "gateway:\n  allow_insecure: [everything]\n")
    with pytest.raises(ManifestError, match=r"gateway\.allow_insecure"):
        load_config(tmp_path, {})


def test_yaml_syntax_error_in_declare_yaml_is_located(tmp_path: Path) -> None:
    write(tmp_path, "project: shop\ngateway: [\n")
    with pytest.raises(ManifestError, match=r"declare\.yaml:3: \(syntax\): invalid YAML"):
        load_config(tmp_path, {})


def test_missing_project_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope", {})


def test_empty_declare_yaml_means_defaults(tmp_path: Path) -> None:
    write(tmp_path, "# nothing set yet\n")
    config = load_config(tmp_path, {})
    assert config.config_file == tmp_path.resolve() / "declare.yaml"
    assert config.gateway_port == 8787


def test_the_connection_timeouts_must_be_positive(tmp_path: Path) -> None:
    write(tmp_path, "gateway:\n  header_timeout_seconds: 0\n  idle_timeout_seconds: -1\n")
    with pytest.raises(ManifestError) as caught:
        load_config(tmp_path, {})
    shown = [str(p) for p in caught.value.problems]
    assert len(shown) == 2
    assert shown[0].startswith("declare.yaml:2: gateway.header_timeout_seconds: ")
    assert shown[1].startswith("declare.yaml:3: gateway.idle_timeout_seconds: ")


def test_the_connection_timeouts_restart_the_gateway_only_when_set() -> None:
    default = GatewaySettings("127.0.0.1", 8787)
    assert GatewaySettings("127.0.0.1", 8787, header_timeout_seconds=10).hash == default.hash
    assert GatewaySettings("127.0.0.1", 8787, idle_timeout_seconds=75).hash == default.hash
    assert GatewaySettings("127.0.0.1", 8787, header_timeout_seconds=5).hash != default.hash
    assert GatewaySettings("127.0.0.1", 8787, idle_timeout_seconds=30).hash != default.hash


def test_the_access_log_is_off_unless_declare_yaml_turns_it_on(tmp_path: Path) -> None:
    assert load_config(tmp_path, {}).gateway_access_log is False
    write(tmp_path, "gateway:\n  access_log: true\n")
    assert load_config(tmp_path, {}).gateway_access_log is True
    write(tmp_path, "gateway:\n  access_log: sometimes\n")
    with pytest.raises(ManifestError, match=r"gateway\.access_log"):
        load_config(tmp_path, {})
