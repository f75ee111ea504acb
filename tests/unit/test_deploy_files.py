"""The shipped deployment files (deploy/) agree with forkserve and with each other.

Docker and Kubernetes are not available to the suite, so these read the files: every command line
must be one forkserve accepts (parsed by its own CLI and settings table), the images must run as a
non-root user with forkserve as PID 1 in exec form, probes must hit the health path, and every
platform's stop timeout must outlast --shutdown-delay + --graceful-timeout, or the platform kills
requests that forkserve was still finishing. (PID 1 behaviour itself is tested for real in
tests/integration/test_containers.py.)
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from forkserve.api import build_config
from forkserve.cli.main import command, pop_gunicorn_flags
from forkserve.config.settings import Config
from forkserve.services import controlpath

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def forkserve_config(argv: list[str], environ: dict[str, str]) -> tuple[str, Config]:
    """APP and the Config that ``forkserve ARGV`` would run with under ENVIRON."""
    assert Path(argv[0]).name == "forkserve", argv
    context = command.make_context("forkserve", list(argv[1:]))
    values = dict(context.params)
    positional = values.pop("app_argument")
    values.pop("print_config", None)
    values.pop("check_config", None)
    gunicorn_flags = pop_gunicorn_flags(values)
    config, _ = build_config(values, environ=environ, cli=True, gunicorn_flags=gunicorn_flags)
    app = positional or config.app
    assert app, f"{argv} names no app (positional APP or FORKSERVE_APP)"
    return app, config


def stop_budget(config: Config) -> float:
    """How long forkserve may take to stop gracefully: what every platform's timeout must exceed."""
    return config.shutdown_delay + config.graceful_timeout


# ------------------------------------------------------------------ Docker


def dockerfile() -> tuple[dict[str, str], str, list[str], list[str]]:
    """(ENV of the final stage, its USER, its CMD, every FROM image)."""
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(r"\\\n\s*", " ", text)  # join continued lines
    env: dict[str, str] = {}
    user, cmd, images = "", [], []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            images.append(rest.split()[0])
            env, user = {}, ""  # a new stage starts clean
        elif instruction == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
        elif instruction == "USER":
            user = rest.strip()
        elif instruction == "CMD":
            cmd = json.loads(rest)  # exec form: a JSON array, or this raises
        elif instruction == "ENTRYPOINT":
            raise AssertionError("no ENTRYPOINT: forkserve itself is PID 1, started by CMD")
    return env, user, cmd, images


def docker_instructions(name: str) -> list[str]:
    """The arguments of every NAME instruction (continued lines joined), in order."""
    logical = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    found = []
    for line in logical.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == name:
            found.append(rest)
    return found


def test_dockerfile_runs_forkserve_as_pid_1_and_not_as_root() -> None:
    env, user, cmd, images = dockerfile()
    assert all(re.fullmatch(r"python:3\.\d+-slim", image) for image in images), images
    uid = user.split(":")[0]
    assert uid and uid not in ("root", "0"), f"USER {user!r}"
    assert uid.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot check it"
    assert cmd[0] == "forkserve", "exec form with forkserve first: it must be PID 1, not a shell"
    app, config = forkserve_config(cmd, env)
    assert app == "forkserve.demo:app"
    assert env["FORKSERVE_APP"] == app, "the app is a setting: `docker run -e FORKSERVE_APP=...` changes it"
    assert str(config.bind[0]) == "0.0.0.0:8000", "a container must listen beyond its loopback"
    assert config.workers == "auto"
    assert config.health_path == "/healthz"


def test_dockerfile_checks_health_and_installs_the_tested_versions() -> None:
    env, _, cmd, _ = dockerfile()
    _, config = forkserve_config(cmd, env)
    (healthcheck,) = docker_instructions("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    probe = json.loads(command)
    assert probe[:2] == ["python", "-c"], "the slim image has no curl"
    assert f"http://127.0.0.1:{config.bind[0].port}{config.health_path}" in probe[2]
    assert "--timeout=" in options
    installs = [run for run in docker_instructions("RUN") if "pip install" in run]
    assert installs and all("-c constraints.txt" in run for run in installs), installs
    copied = " ".join(docker_instructions("COPY"))
    assert "constraints.txt" in copied and "LICENSE" in copied


def test_dockerignore_keeps_the_context_small() -> None:
    text = (DEPLOY / "Dockerfile.dockerignore").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "ignore everything, then allow what the image needs"
    for needed in ("!pyproject.toml", "!forkserve/", "!LICENSE", "!constraints.txt"):
        assert needed in lines


def test_compose_agrees_with_the_image() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    web = compose["services"]["web"]
    image_env, _, cmd, _ = dockerfile()
    env = {**image_env, **{key: str(value) for key, value in web["environment"].items()}}
    _, config = forkserve_config(cmd, env)
    grace = _seconds(web["stop_grace_period"])
    assert grace > stop_budget(config), f"stop_grace_period {grace} s <= {stop_budget(config)} s"
    assert web.get("init") is not True, "forkserve reaps and handles TERM as PID 1"
    assert web.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert config.health_path is not None
    assert any(config.health_path in part for part in web["healthcheck"]["test"])
    assert web["ports"] == [f"{config.bind[0].port}:{config.bind[0].port}"]
    assert web["build"]["dockerfile"] == "deploy/Dockerfile"


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", str(text))
    assert match, text
    return int(match[1]) * (60 if match[2] == "m" else 1)


# ------------------------------------------------------------------ Kubernetes


def manifests() -> dict[str, Any]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[document["kind"]] = document
    return found


def test_kubernetes_grace_period_outlasts_a_graceful_stop() -> None:
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    _, config = forkserve_config(container["args"], env)
    budget = stop_budget(config)
    assert pod["terminationGracePeriodSeconds"] > budget, (
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} must exceed "
        f"--shutdown-delay + --graceful-timeout = {budget}"
    )
    assert config.shutdown_delay > 0, "give kube-proxy and ingresses time to drop the pod first"
    # A preStop hook's time counts against the same grace period: none is used, --shutdown-delay
    # does its job from inside the server.
    assert "lifecycle" not in container


def test_kubernetes_probes_hit_the_health_path() -> None:
    deployment = manifests()["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    _, config = forkserve_config(container["args"], env)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == config.bind[0].port
    assert config.metrics_bind is not None
    assert ports["metrics"] == int(config.metrics_bind.rsplit(":", 1)[1]), "expose the metrics port"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == config.health_path, probe
        assert get["port"] in ports, probe
    liveness = container["livenessProbe"]
    # While draining, /healthz answers 503: liveness must not kill a pod that is stopping properly.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > stop_budget(config)
    assert container["readinessProbe"]["failureThreshold"] == 1


def test_kubernetes_runs_the_image_user_without_privileges() -> None:
    found = manifests()
    pod = found["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    _, user, _, _ = dockerfile()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "limits" in container["resources"] and "cpu" in container["resources"]["limits"]


def test_kubernetes_can_run_a_locally_built_image() -> None:
    (container,) = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    if container["image"].endswith(":latest") or ":" not in container["image"]:
        # Kubernetes defaults :latest to Always, which fails for an image loaded into the node.
        assert container.get("imagePullPolicy") in ("IfNotPresent", "Never")


def test_kubernetes_service_selects_the_pods() -> None:
    found = manifests()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = found["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    (container,) = found["Deployment"]["spec"]["template"]["spec"]["containers"]
    names = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["ports"]} <= names


# ------------------------------------------------------------------ systemd


def unit(name: str) -> dict[str, list[str]]:
    """KEY -> every value given (systemd allows repeats), section names dropped."""
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_systemd_units() -> None:
    service, socket_unit = unit("forkserve.service"), unit("forkserve.socket")
    assert service["Type"] == ["notify"]
    env = dict(item.split("=", 1) for item in service.get("Environment", []))
    argv = shlex.split(service["ExecStart"][0])
    _, config = forkserve_config(argv, env)
    assert float(service["TimeoutStopSec"][0]) > stop_budget(config)
    assert service["KillMode"] == ["mixed"], "TERM to the master only; it stops the workers itself"
    assert int(service["WatchdogSec"][0]) > 0
    assert "forkserve.socket" in service["Requires"][0]
    assert socket_unit["ListenStream"], "socket activation: systemd binds, forkserve serves"
    assert service["User"] != ["root"], "the socket unit binds port 80: the service needs no root"


def test_systemd_unit_keeps_the_control_socket_where_ctl_finds_it() -> None:
    service = unit("forkserve.service")
    # PrivateTmp= hides /tmp/forkserve-<uid>; the master uses $RUNTIME_DIRECTORY instead.
    assert service["RuntimeDirectory"] == ["forkserve"]
    assert service["RuntimeDirectoryMode"] == ["0700"]
    assert controlpath.default_dir({"RUNTIME_DIRECTORY": "/run/forkserve"}, 33) == Path("/run/forkserve")
    # The peer uid check needs real uids: root outside a user namespace would be 65534 inside.
    assert "PrivateUsers" not in service


def test_systemd_unit_is_hardened() -> None:
    service = unit("forkserve.service")
    assert service["CapabilityBoundingSet"] == [""], "no capability: the socket unit binds the port"
    assert service["SystemCallFilter"][0] == "@system-service"
    assert service["ProtectSystem"] == ["strict"] and service["NoNewPrivileges"] == ["yes"]
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian: apt-get install systemd) scores the unit's exposure"
    # --threshold is the exposure x 10: exit 0 means 2.0 or better ("OK"); the shipped unit scores 1.2.
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", str(DEPLOY / "systemd/forkserve.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
