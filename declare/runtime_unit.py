"""The systemd unit that runs a project's runtime (`declare runtime unit`): text only.

`render_unit(config, environment_names, python)` returns the unit for the runtime of the
project `config` describes: `python -m declare.runtime --supervised` in the project folder,
`Restart=always` (systemd is the supervisor; no keeper), `KillMode=process` (the gateway and
the replicas the runtime starts outlive a restart of the runtime itself), and an
`EnvironmentFile` at `%E/declare/<project>.env` (`~/.config/declare/` for a user unit,
`/etc/declare/` for a system one) for the variables `declare apply` would have given it,
named in a comment, never with their values.

Does not install, enable or start anything, and reads no environment.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from pathlib import Path

from declare.config import ProjectConfig
from declare.runtime_control import supervised_argv

RESTART_SECONDS = 1


def unit_name(config: ProjectConfig) -> str:
    """`declare-<project>.service`, with what a unit name cannot hold made '-'."""
    return f"declare-{re.sub(r'[^A-Za-z0-9_.-]', '-', config.project_name)}.service"


def environment_file(config: ProjectConfig) -> str:
    return f"%E/declare/{re.sub(r'[^A-Za-z0-9_.-]', '-', config.project_name)}.env"


def _exec(argv: Iterable[str]) -> str:
    """A command line as systemd reads it: words quoted, '%' and '$' escaped."""
    return " ".join(shlex.quote(a).replace("%", "%%").replace("$", "$$") for a in argv)


def render_unit(config: ProjectConfig, environment_names: Iterable[str], python: str) -> str:
    folder = str(config.project_dir)
    argv = (python, *supervised_argv(Path(folder))[1:])
    names = sorted(set(environment_names))
    listed = "\n".join(f"#   {n}" for n in names) or "#   (none in this shell)"
    return f"""\
# The runtime of the declare project "{config.project_name}", under systemd.
# Written by `declare runtime unit`. Install it as a user unit, for example:
#   declare runtime unit > ~/.config/systemd/user/{unit_name(config)}
#   systemctl --user daemon-reload && systemctl --user enable --now {unit_name(config)}
# then set `runtime: {{supervisor: systemd}}` in declare.yaml and run `declare apply`:
# apply hands the endpoints to this runtime and starts no runtime process of its own.
[Unit]
Description=declare runtime of {config.project_name}: replaces what dies, autoscales, wakes
After=network-online.target
Wants=network-online.target
# However often it dies, it is started again.
StartLimitIntervalSec=0

[Service]
Type=simple
WorkingDirectory={folder}
# The variables `declare apply` had when this unit was written, that the runtime acts with
# (the replicas and the gateway it starts get them). Put them, with their values, in this
# file (mode 0600); apply refuses to hand over to a runtime whose environment differs:
{listed}
EnvironmentFile=-{environment_file(config)}
ExecStart={_exec(argv)}
Restart=always
RestartSec={RESTART_SECONDS}
# Only the runtime's own process is signalled: the gateway and the replicas it started
# keep serving while it restarts. `declare destroy` stops those.
KillMode=process
TimeoutStopSec=20

[Install]
WantedBy=default.target
"""
