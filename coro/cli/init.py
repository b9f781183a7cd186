"""`coro init`: the first run — choose the LLM provider jobs use and write config.json.

Four choices: `anthropic` (the Messages API), `openai` (api.openai.com), `local` (any
OpenAI-compatible server: the `openai` plugin with a `baseUrl`) and `script` (the
offline, deterministic executor: no model, no key). A key is read from the variable the
provider's tools use (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`) or asked for without echo;
it is written to config.json (mode 0600) and never printed. The rest of config.json is
kept: the choice is merged into it and the whole is validated before it is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from coro.cli.client import report_error
from coro.config import ConfigError, CoroConfig, CoroHome, merge_config, validation_issues
from coro.domain.errors import PluginConfigError

Choice = Literal["anthropic", "openai", "local", "script"]
CHOICES: tuple[Choice, ...] = ("anthropic", "openai", "local", "script")


@dataclass(frozen=True)
class Provider:
    plugin: str  # the executor plugin the choice configures
    label: str
    key_variable: str | None  # where its key is read from


PROVIDERS: dict[Choice, Provider] = {
    "anthropic": Provider("anthropic", "Anthropic (Claude, the Messages API)", "ANTHROPIC_API_KEY"),
    "openai": Provider("openai", "OpenAI (api.openai.com)", "OPENAI_API_KEY"),
    "local": Provider(
        "openai", "a local OpenAI-compatible server (Ollama, vLLM, llama.cpp …)", None
    ),
    "script": Provider("script", "the offline `script` executor (no model, no key)", None),
}

NEXT_STEPS = """Next:
  coro start                      # the runner: http://127.0.0.1:3000 and /dashboard/
  coro repo create api            # a repository of the offline local SCM
  coro job --repo api --description "Add rate limiting" --follow"""

SCRIPT_NOTE = (
    "The script executor runs the steps a job gives in params.script (SPEC §6; README: "
    "The `script` executor); a phase without steps does nothing. `coro demo` shows a "
    "scripted job end to end. Run `coro init` again to choose a model provider."
)


class InitFailed(Exception):
    pass


def init(
    provider: Annotated[
        Choice | None,
        typer.Option(
            "--provider",
            metavar="NAME",
            help="anthropic, openai, local (an OpenAI-compatible server) or script (offline).",
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            metavar="URL",
            help="The server's URL (local: required, e.g. http://localhost:11434/v1).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", metavar="MODEL", help="The default model (local: required)."),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Ask nothing: replace a configured provider, take keys from the environment only.",
        ),
    ] = False,
) -> None:
    """Choose the LLM provider jobs use (or the offline script executor) and write
    config.json."""
    console = Console(highlight=False, soft_wrap=True)
    home = CoroHome.from_env()
    try:
        stored = _stored_json(home)
        current = CoroConfig.model_validate(stored).llm.default_provider
        if current and not yes:
            console.print(f"{home.config_file} already uses llm.defaultProvider {current!r}.")
            if not typer.confirm("Replace it?", default=False):
                console.print("Nothing changed.")
                return
        choice = provider or _ask_provider(console, yes)
        patch = _patch(choice, base_url, model, yes, console)
        config = _validated(merge_config(stored, patch))
    except (ConfigError, InitFailed) as exc:
        report_error(str(exc))
        raise typer.Exit(1 if isinstance(exc, ConfigError) else 2) from None
    home.save_config(config)
    chosen = PROVIDERS[choice]
    console.print(
        Text.assemble(
            ("Saved ", "green"),
            (str(home.config_file), "bold"),
            f": llm.defaultProvider = {chosen.plugin!r} ({chosen.label}).",
        )
    )
    if choice == "script":
        console.print(Text(SCRIPT_NOTE, style="dim"))
    console.print("A runner that is already running reads it when restarted.")
    console.print(NEXT_STEPS)


def _stored_json(home: CoroHome) -> dict[str, Any]:
    """config.json as written (so the defaults are not all spelled out); `{}` when absent."""
    home.load_config()  # a broken file is reported, not overwritten
    try:
        data = json.loads(home.config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def _ask_provider(console: Console, yes: bool) -> Choice:
    if yes:
        raise InitFailed(f"--yes needs --provider ({', '.join(CHOICES)})")
    console.print("Which LLM provider should jobs use?")
    for number, name in enumerate(CHOICES, 1):
        console.print(f"  {number}. {name:<9} — {PROVIDERS[name].label}")
    while True:
        answer = str(typer.prompt("Provider (1-4 or a name)", default="1")).strip().lower()
        for number, name in enumerate(CHOICES, 1):
            if answer in (name, str(number)):
                return name
        console.print(Text(f"Choose one of 1-4 or {', '.join(CHOICES)}.", style="yellow"))


def _patch(
    choice: Choice, base_url: str | None, model: str | None, yes: bool, console: Console
) -> dict[str, Any]:
    chosen = PROVIDERS[choice]
    patch: dict[str, Any] = {"llm": {"defaultProvider": chosen.plugin}}
    if choice == "script":
        return patch
    settings: dict[str, Any] = {}
    if choice == "local":
        base_url = base_url or _ask(yes, "--base-url", "Server URL", "http://localhost:11434/v1")
        model = model or _ask(yes, "--model", "Model name (as the server knows it)", None)
    if base_url:
        settings["baseUrl"] = base_url
    elif choice == "openai":  # api.openai.com: a server chosen before is dropped
        settings["baseUrl"] = None
    if model:
        settings["defaultModel"] = model
    key = _key(chosen, yes, console)
    if key:
        settings["apiKey"] = key
    _check_settings(chosen.plugin, {k: v for k, v in settings.items() if v is not None})
    patch["plugins"] = {"installed": {chosen.plugin: {"enabled": True, "config": settings}}}
    return patch


def _check_settings(plugin: str, settings: dict[str, Any]) -> None:
    """The plugin's own validation of its settings (loaded here only: the SDKs are big)."""
    from coro.executors.anthropic import AnthropicSettings
    from coro.executors.common import parse_settings
    from coro.executors.openai_chat import OpenAISettings

    try:
        parse_settings(AnthropicSettings if plugin == "anthropic" else OpenAISettings, settings)
    except PluginConfigError as exc:  # names fields, never values
        raise InitFailed(f"plugins.installed.{plugin}.config: {exc}") from None


def _ask(yes: bool, flag: str, question: str, default: str | None) -> str:
    if yes:
        if default is None:
            raise InitFailed(f"give {flag} (with --yes nothing is asked)")
        return default
    answer: str = typer.prompt(question, default=default)
    return answer.strip()


def _key(chosen: Provider, yes: bool, console: Console) -> str | None:
    """The provider's key: from its environment variable, else asked for without echo."""
    variable = chosen.key_variable
    if variable and os.environ.get(variable, "").strip():
        console.print(f"API key: taken from ${variable} (saved in config.json, mode 0600).")
        return os.environ[variable].strip()
    if chosen.key_variable is None:  # a local server: usually keyless
        if yes:
            return None
        entered: str = typer.prompt(
            "API key (empty if the server needs none)",
            default="",
            hide_input=True,
            show_default=False,
        )
        return entered.strip() or None
    if yes:
        raise InitFailed(f"set {variable} (with --yes the key is read from the environment only)")
    secret: str = typer.prompt(f"API key (or set ${variable})", hide_input=True)
    if not secret.strip():
        raise InitFailed("no API key given")
    return secret.strip()


def _validated(data: dict[str, Any]) -> CoroConfig:
    try:
        return CoroConfig.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(f"{i['path']}: {i['message']}" for i in validation_issues(exc))
        raise InitFailed(f"the new config.json would be invalid: {detail}") from None
