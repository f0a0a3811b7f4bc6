"""docker/compose.yml parses, and runs what the README and scripts/kafka say it runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker" / "compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_the_readme_starts_exist() -> None:
    services = compose()["services"]
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"docker compose -f docker/compose\.yml up((?: -{1,2}[\w-]+)*)((?: [\w.-]+)*)", readme)
    assert commands, "the README should say how to start the broker with docker compose"
    named = {s for _, names in commands for s in names.split()}
    assert "kafka" in named
    assert named <= set(services), f"README starts services compose.yml lacks: {named - set(services)}"


def test_kafka_service_is_a_kraft_broker_that_keeps_everything() -> None:
    kafka = compose()["services"]["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    # the same Kafka version the tests run (scripts/kafka tries the first one first)
    versions = re.search(r"KAFKA_VERSIONS = \[([^\]]*)\]", (REPO / "scripts" / "kafka").read_text())
    assert versions is not None
    assert tag == versions.group(1).split(",")[0].strip().strip("\"'")
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_LOG_RETENTION_MS"] == "-1"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    # what clients are told to connect to must be published on the host
    # host and port may be ${VAR:-default} interpolations
    external = re.search(r"EXTERNAL://(?:\$\{[^}]*\}|[^:,]+):(\$\{[^}]*\}|\d+)", env["KAFKA_ADVERTISED_LISTENERS"])
    assert external is not None
    host_port = next(p for p in kafka["ports"] if p.endswith(":9092"))
    assert host_port.endswith(f"{external.group(1)}:9092")
    assert kafka["healthcheck"]["test"]


def test_named_volumes_are_declared() -> None:
    data = compose()
    declared = set(data.get("volumes") or {})
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "$")):
                assert source in declared, f"service {name} uses undeclared volume {source}"


def _defaults(text: str) -> str:
    """Compose's `${VAR:-default}` interpolation with nothing set: the defaults (innermost first)."""
    pattern = re.compile(r"\$\{(\w+)(?::?-([^${}]*))?\}")
    while pattern.search(text):
        text = pattern.sub(lambda m: m.group(2) or "", text)
    return text


def ticktape_services() -> dict[str, Any]:
    services = compose()["services"]
    found = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("ticktape")}
    assert {"record-betfair", "record-binance"} <= set(found)
    return found


def test_recorder_services_run_real_ticktape_commands() -> None:
    import click

    from ticktape.cli import _register_plugins, cli

    _register_plugins()  # what `ticktape` (main) does before parsing: record, import, ... attach
    for name, service in ticktape_services().items():
        assert (REPO / "docker" / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        args = [_defaults(a) for a in service["command"]]
        command: click.Command = cli
        ctx = click.Context(cli)
        while isinstance(command, click.Group) and args and args[0] in command.commands:
            command = command.commands[args.pop(0)]
        assert not isinstance(command, click.Group), f"{name}: {service['command']} names no command"
        command.make_context(command.name or name, list(args), parent=ctx)  # parses and checks every option
        if name == "record-betfair":
            assert json.loads(args[args.index("--filter") + 1])  # the filter is JSON, as the command requires


def test_recorders_write_to_the_compose_broker_and_take_secrets_only_from_env_files() -> None:
    kafka_env = compose()["services"]["kafka"]["environment"]
    internal = re.search(r"INTERNAL://([^,]+)", kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    assert internal is not None
    for name, service in ticktape_services().items():
        env = service.get("environment", {})
        assert env["TICKTAPE_TAPE"].split("://")[1] == internal.group(1), name
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        secret_names = ("PASSWORD", "SECRET", "APP_KEY", "API_KEY", "USERNAME")
        assert not [k for k in env if any(s in k for s in secret_names)], f"{name} puts a secret in compose.yml"
        for entry in service.get("env_file", []):  # the paper venue needs no secrets
            path = _defaults(entry["path"])
            assert "ticktape" in path and not path.startswith((".", str(REPO))), f"{name}: {path} may be in the repo"


def test_dockerfile_copies_what_the_repository_has_and_runs_ticktape() -> None:
    lines = (REPO / "docker" / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY") and "--from" not in line]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which the repository lacks"
    packages = re.findall(r'include = \[([^\]]*)\]', (REPO / "pyproject.toml").read_text())[0]
    for package in re.findall(r'"(\w+)\*"', packages):
        assert any(package in sources for sources in copies), f"the image lacks the {package} package"
    assert 'ENTRYPOINT ["ticktape"]' in lines
    assert any("ticktape[rdkafka]" in line for line in lines)  # the services use kafka+rdkafka://


def test_live_services_run_commands_with_options_that_exist() -> None:
    """The runner and gateway services call `ticktape run` / `ticktape gateway` with real options."""
    from robots.live.cli import gateway, run

    services = compose()["services"]
    commands = {"runner": run, "gateway": gateway}
    for name, command in commands.items():
        service = services[name]
        assert "live" in service["profiles"] and service["environment"]["TICKTAPE_TAPE"].startswith("kafka")
        argv = service["command"]
        assert argv[0] == command.name
        known = {opt for param in command.params for opt in param.opts}
        used = [a for a in argv if a.startswith("--")]
        assert used and set(used) <= known, f"{name}: unknown options {set(used) - known}"
    assert "gateway" in services["runner"]["depends_on"]
    assert services["runner"]["command"][services["runner"]["command"].index("--gateway") + 1] == "external"


def test_mongo_service_is_a_mongodb_on_loopback_with_a_volume_and_a_ping_healthcheck() -> None:
    mongo = compose()["services"]["mongo"]
    assert mongo["image"].split(":")[0] == "mongo" and int(mongo["image"].split(":")[1]) >= 6
    assert mongo["profiles"] == ["mongo"]
    ports = [_defaults(p) for p in mongo["ports"]]
    assert ports == ["127.0.0.1:27017:27017"], "published on loopback only, like kafka"
    assert any(v.split(":")[1] == "/data/db" for v in mongo["volumes"]), "the data lives in a volume"
    check = " ".join(mongo["healthcheck"]["test"])
    assert "mongosh" in check and "ping" in check


def test_mongo_sync_service_follows_the_compose_broker_into_the_mongo_service() -> None:
    services = compose()["services"]
    sync = services["mongo-sync"]
    assert sync["profiles"] == ["mongo"]
    assert sync["image"] == services["runner"]["image"] and sync["build"] == services["runner"]["build"]
    assert sync["depends_on"]["mongo"]["condition"] == "service_healthy"
    argv = sync["command"]
    assert argv[:2] == ["mongo", "sync"] and "--follow" in argv
    mongo_uri = argv[argv.index("--mongo") + 1]
    assert mongo_uri == "mongodb://mongo:27017/ticktape"
    assert services["mongo"]["hostname"] == "mongo"
    # the broker and the secrets are checked with the other ticktape services
    assert "mongo-sync" in ticktape_services()
