"""The container files stay consistent with the CLI and the settings (no Docker engine here)."""

from pathlib import Path

import yaml

from linewatch.cli import build_parser
from linewatch.pipeline.config import load_settings

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_commands_parse_with_the_cli() -> None:
    services = compose()["services"]
    for name in ("ingest", "infer", "sink"):
        args = build_parser().parse_args(services[name]["command"])
        assert args.command == "worker" and args.role == name


def test_compose_environment_names_real_settings() -> None:
    environment = compose()["x-linewatch"]["environment"]
    assert all(key.startswith("LINEWATCH_") for key in environment)
    settings = load_settings(environ=environment)
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://")


def test_dockerfiles_run_the_cli_and_copy_every_package() -> None:
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (DOCKER / name).read_text()
        for folder in ("linewatch", "pipeline", "schemas", "workers", "models"):
            assert f"COPY {folder} {folder}" in text, (name, folder)
        entry = next(line for line in text.splitlines() if line.startswith("ENTRYPOINT"))
        assert "linewatch" in entry
        command = next(line for line in text.splitlines() if line.startswith("CMD"))
        args = build_parser().parse_args(yaml.safe_load(command.removeprefix("CMD ")))
        assert args.command == "worker"
    assert "paddlepaddle-gpu==2.6.2" in (DOCKER / "Dockerfile.gpu").read_text()
    assert "cuda:11.8" in (DOCKER / "Dockerfile.gpu").read_text()


def test_keda_scales_the_inference_group_of_the_frames_stream() -> None:
    documents = list(yaml.safe_load_all((DOCKER / "k8s" / "inference.yaml").read_text()))
    deployment, scaled = documents
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.role) == ("worker", "infer")
    env = {e["name"]: e.get("value", "x") for e in container["env"]}
    settings = load_settings(environ={k: v for k, v in env.items() if k != "LINEWATCH_REDIS_URL"})
    assert settings.metrics_port == container["ports"][0]["containerPort"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"]["consumerGroup"] == "infer"
    assert trigger["metadata"]["stream"].startswith("lw:frames:")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_the_sentinel_compose_gives_every_worker_the_sentinels() -> None:
    variant = yaml.safe_load((DOCKER / "compose.sentinel.yaml").read_text())
    services = variant["services"]
    assert {"redis-primary", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"} <= set(
        services
    )
    assert "--replicaof redis-primary 6379" in services["redis-replica"]["command"]
    for name in ("ingest", "infer", "sink", "rq"):
        args = build_parser().parse_args(services[name]["command"])
        assert (args.command, args.role) == ("worker", name)
    environment = dict(variant["x-linewatch"]["environment"])
    settings = load_settings(environ=environment)
    assert settings.redis is not None and settings.redis_url is None
    hosts = {address.split(":")[0] for address in settings.redis.sentinels}
    assert hosts == {"sentinel-1", "sentinel-2", "sentinel-3"}
    for number in (1, 2, 3):
        conf = services[f"sentinel-{number}"]["command"][2]
        assert f"sentinel monitor {settings.redis.service} redis-primary 6379 2" in conf


def test_keda_on_sentinel_follows_the_primary_of_the_service() -> None:
    text = (DOCKER / "k8s" / "inference-sentinel.yaml").read_text()
    deployment, scaled = list(yaml.safe_load_all(text))
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {e["name"]: e.get("value", "secret") for e in env}
    settings = load_settings(
        environ={k: v for k, v in values.items() if k.startswith("LINEWATCH_")}
    )
    assert settings.redis is not None and settings.redis.password is not None
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis-sentinel-streams"
    metadata = trigger["metadata"]
    assert metadata["sentinelMaster"] == settings.redis.service
    assert metadata["addressesFromEnv"] in values
    assert values[metadata["addressesFromEnv"]] == ",".join(settings.redis.sentinels)
    assert metadata["passwordFromEnv"] in values and metadata["sentinelPasswordFromEnv"] in values
    assert (metadata["consumerGroup"], metadata["stream"][:10]) == ("infer", "lw:frames:")
