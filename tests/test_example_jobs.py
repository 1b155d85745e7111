"""The scheduling examples in examples/deploy/ run real commands with valid flags: each file is parsed
as its scheduler reads it, and every profile-first invocation in it is parsed by the CLI's own
click command tree (an unknown flag or a bad choice fails here, not on the user's server)."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from analyzer.cli import main
from analyzer.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEPLOY = EXAMPLES / "deploy"
SHELL_OPERATORS = {"&&", "||", ";", "|"}


def invocation(argv: list[str]) -> tuple[list[str], dict]:
    """(command path, parsed parameters) of `profile-first ARGV`; click.UsageError when invalid."""
    ctx = main.make_context("profile-first", list(argv))
    path, command, params = [], main, {}
    while isinstance(command, click.Group):
        # Click 8.2+ keeps the subcommand in _protected_args (its public alias is deprecated); 9 moves it to args.
        args = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        name, command, rest = command.resolve_command(ctx, args)
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
        params = ctx.params
    return path, params


def invocations_in_shell(line: str) -> list[list[str]]:
    """The argv after each `profile-first` or `.../bin/profile-first` in a shell line, up to the next operator."""
    words = shlex.split(line, comments=False)
    found = []
    for i, w in enumerate(words):
        if w == "profile-first" or w.endswith("/bin/profile-first"):
            argv = []
            for a in words[i + 1:]:
                if a in SHELL_OPERATORS or a.startswith((">", "<", "2>")):
                    break
                argv.append(a)
            found.append(argv)
    return found


def check_config_flag(params: dict) -> None:
    """A --config given is the shipped example's path on the server: the example must be valid."""
    if params.get("config_path"):
        assert Path(params["config_path"]).name == "weekly.toml"
        load_config(str(EXAMPLES / "weekly.toml"))


def test_the_cron_line_runs_the_weekly_report():
    lines = [ln for ln in (DEPLOY / "profile-first.cron").read_text().splitlines()
             if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)  # /etc/cron.d format: 5 time fields, the user, the command
    minute, hour, dom, month, dow, user, command = fields
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24 and (dom, month) == ("*", "*") and dow == "1"
    assert re.fullmatch(r"[a-z_][a-z0-9_-]*", user)
    (argv,) = invocations_in_shell(command)
    path, params = invocation(argv)
    assert path == ["report"] and params["fail_on"] == ("incomplete",)
    check_config_flag(params)


def test_the_systemd_service_and_timer_pair():
    service = configparser.ConfigParser(strict=True, interpolation=None)
    service.optionxform = str  # systemd keys are case-sensitive
    service.read(DEPLOY / "profile-first-weekly.service")
    assert service["Service"]["Type"] == "oneshot"
    (argv,) = invocations_in_shell(service["Service"]["ExecStart"])
    path, params = invocation(argv)
    assert path == ["report"]
    check_config_flag(params)
    timer = configparser.ConfigParser(strict=True, interpolation=None)
    timer.optionxform = str
    timer.read(DEPLOY / "profile-first-weekly.timer")
    assert timer["Timer"]["Unit"] == "profile-first-weekly.service"
    assert re.fullmatch(r"Mon \*-\*-\* \d\d:\d\d:\d\d UTC", timer["Timer"]["OnCalendar"])
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_kubernetes_cronjob():
    job = yaml.safe_load((DEPLOY / "cronjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "CronJob")
    spec = job["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    path, params = invocation(container["args"])  # the image's entrypoint is profile-first
    assert path == ["report"]
    check_config_flag(params)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(params["config_path"]).parent) in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["items"][0]["path"] == "weekly.toml"


def test_the_ci_job_runs_the_evidence_pack_on_a_pull_request():
    wf = yaml.safe_load((DEPLOY / "evidence-pack.github-actions.yml").read_text())
    assert "pull_request" in wf[True]  # YAML 1.1 reads the key `on` as true
    (job,) = wf["jobs"].values()
    runs = [s["run"] for s in job["steps"] if "run" in s]
    calls = [argv for r in runs for argv in invocations_in_shell(r.replace("\n", " "))]
    (argv,) = [a for a in calls if a and a[0] == "report"]
    path, params = invocation(argv)
    assert path == ["report"] and params["evidence"] and params["no_history"] and params["no_delivery"]
    assert any(r.startswith("pip install") for r in runs)


@pytest.mark.parametrize("argv", [["report", "--fail-on", "sometimes"], ["report", "--no-such-flag"],
                                  ["reprot"], ["history", "diff", "1"]])
def test_the_checker_rejects_invalid_invocations(argv):
    with pytest.raises(click.UsageError):
        invocation(argv)
