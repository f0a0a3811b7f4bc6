"""docker/compose.yml parses, and runs what the README and scripts/kafka say it runs."""

from __future__ import annotations

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
