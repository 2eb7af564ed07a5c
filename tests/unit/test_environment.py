"""The allow-lists of declare.environment: what a replica and the gateway may see of
declare's environment."""

from __future__ import annotations

import pytest

from declare.environment import base_environment, replica_environment
from declare.errors import ConfigError
from providers.local.settings import LocalSettings

ENVIRON = {
    "PATH": "/usr/bin",
    "HOME": "/home/u",
    "LC_ALL": "C.UTF-8",
    "MLFLOW_TRACKING_URI": "http://tracking",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "DECLARE_SECRET_TEAM_KEY": "secret",
    "DECLARE_TEST_STATE_DSN": "postgresql://user:pw@db/x",
    "SERVING_TOKEN": "gateway-token",
    "TEAM_REGION": "eu",
    "TEAM_OWNER": "ml",
}


def test_a_replica_gets_the_allow_list_and_what_pass_env_names() -> None:
    env = replica_environment(ENVIRON)
    assert set(env) == {"PATH", "HOME", "LC_ALL", "MLFLOW_TRACKING_URI", "AWS_SECRET_ACCESS_KEY"}
    passed = replica_environment(ENVIRON, ("TEAM_REGION", "DECLARE_SECRET_*"))
    assert "TEAM_REGION" in passed and "TEAM_OWNER" not in passed
    assert "DECLARE_SECRET_TEAM_KEY" not in passed  # a secret never passes
    assert {"TEAM_REGION", "TEAM_OWNER"} <= set(replica_environment(ENVIRON, ("TEAM_*",)))


def test_the_gateway_gets_the_base_only() -> None:
    assert set(base_environment(ENVIRON)) == {"PATH", "HOME", "LC_ALL"}


@pytest.mark.parametrize("bad", ["TEAM_*", ["BAD NAME"], [3], ["A*B"]])
def test_pass_env_must_be_a_list_of_names(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"providers\.local\.pass_env"):
        LocalSettings.parse({"pass_env": bad})
    assert LocalSettings.parse({"pass_env": ["A", "B_*"]}).pass_env == ("A", "B_*")
