"""``retest serve-llm`` and ``retest prepare-models``: the embedded vLLM server."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from agent.commands.common import settings_from_flags
from core.errors import BadInputError
from tools.embedded_models import EMBEDDED_MODELS, prepare_model
from tools.vllm_server import EmbeddedServer


def serve_llm(
    detach: Annotated[bool, typer.Option("--detach", help="Start in the background.")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the running server.")] = False,
    model: Annotated[str | None, typer.Option("--model", help="Packaged model key.")] = None,
) -> None:
    """Start (or stop) the embedded vLLM server; the last line printed is its OpenAI base URL."""
    if detach and stop:
        raise BadInputError("--detach and --stop exclude each other")
    settings = settings_from_flags()
    server = EmbeddedServer(settings, model)
    if stop:
        stopped = server.stop()
        typer.echo(f"stopped {server.model.key}" if stopped else f"{server.model.key} not running")
        return
    # --detach: started on purpose, it stops after server.idle_stop_s idle seconds; in the
    # foreground this command is its user and Ctrl-C stops it.
    base_url = server.ensure_running("detached" if detach else "implicit")
    record = server.running()
    typer.echo(f"serving {server.served_name} (pid {record.pid if record else '?'})")
    typer.echo(base_url)
    if detach:
        return
    try:
        while server.running() is not None:
            time.sleep(5)
        typer.echo("server exited", err=True)
    except KeyboardInterrupt:
        server.stop()


def prepare_models(
    model: Annotated[list[str] | None,
                     typer.Option("--model", help="Only these keys (default: all).")] = None,
) -> None:
    """Convert the packaged GGUF models once into safetensors folders vLLM can serve."""
    settings = settings_from_flags()
    for key in model or sorted(EMBEDDED_MODELS):
        folder = prepare_model(settings.resolved_models_dir, key)
        typer.echo(f"{key}: {folder}")


def register(app: typer.Typer) -> None:
    """Add the server commands to ``app``."""
    app.command("serve-llm")(serve_llm)
    app.command("prepare-models")(prepare_models)
