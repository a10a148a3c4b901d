"""What every ``outcrop`` command shares: the options, the run's state and the one error edge.

The shared options (``--data-dir``, ``--database-url``, ``--json``, ``--endpoint``) are accepted
before the subcommand and after it alike (``outcrop --data-dir X serve`` and ``outcrop serve
--data-dir X``): each one's callback records its value in the run's :class:`CliState`, which
click keeps in ``ctx.obj`` and hands down to every subcommand's context. A command adds them with
``@shared_options`` (``@shared_options(endpoint=True)`` where it talks to a server) and reads them
back with ``CliState.of(ctx)``.

:class:`OutcropGroup`, the root command's class, is the CLI's one error edge: it turns an
``OutcropError`` raised anywhere below it into one red line and exit code 1, never a traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperArgument, TyperGroup, TyperOption

from outcrop.auth.bootstrap import read_credentials
from outcrop.cli.client import Client
from outcrop.config import OutcropConfig
from outcrop.envs import cli_api_key, default_endpoint, load_config
from outcrop.errors import InvalidRequestError, OutcropError
from outcrop.registry import arns

# Piped or redirected output is as wide as its longest row, so names and ARNs arrive whole.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 4096)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def new_table(*headers: str) -> Table:
    """A listing whose long values (ARNs, names, URLs) fold onto more lines instead of being cut."""
    table = Table(*headers)
    for column in table.columns:
        column.overflow = "fold"
    return table


def check_name_option(value: str, option: str, *, job: bool = False) -> str:
    """Check a name the user typed against the server's pattern, so a bad one is reported against ``option``."""
    pattern = arns.JOB_NAME_RE if job else arns.MODEL_NAME_RE
    if 1 <= len(value) <= arns.MAX_NAME_CHARS and pattern.fullmatch(value):
        return value
    rule = (
        "start with a letter or digit, then letters, digits, '-', '+' or '.'"
        if job
        else "letters and digits, with at most one '-' or '_' between them"
    )
    example = "my-job-1" if job else "my_model-v2"
    raise InvalidRequestError(
        f"{option} {value!r} is not a valid {'job' if job else 'model'} name: use 1-{arns.MAX_NAME_CHARS} "
        f"characters, {rule} (pattern {pattern.pattern}), for example {option} {example}.",
        param=option,
    )


def print_error(message: str) -> None:
    """The CLI's one shape for a failure: one red line on stderr."""
    err_console.print("[bold red]error:[/] " + escape(message), highlight=False, soft_wrap=True)


# The options of the commands that talk to a running server only (``outcrop kb``, ``prompts``,
# ``endpoints``), given after the command.
ENDPOINT_OPTION: Any = typer.Option(
    None, "--endpoint", "-e", help="URL of the Outcrop server (default: $OUTCROP_ENDPOINT)."
)
DATA_DIR_OPTION: Any = typer.Option(None, "--data-dir", help="The server's data folder (for its admin key).")


def server_client(endpoint: str | None, data_dir: Path | None) -> Client:
    """A client with $OUTCROP_API_KEY, else the admin's key from the data dir (as the other commands)."""
    config = load_config(**({"data_dir": data_dir} if data_dir else {}))
    api_key = cli_api_key() or (read_credentials(config) or {}).get("api_key")
    return Client(endpoint or default_endpoint(config), api_key=api_key)


def fail(exc: OutcropError) -> typing.NoReturn:
    """Print the error as one red line and exit 1."""
    err_console.print("[bold red]error:[/] " + escape(exc.message), highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@dataclass
class CliState:
    """One run of the command: the shared options as given, before or after the subcommand."""

    data_dir: Path | None = None
    database_url: str | None = None
    json_output: bool = False
    endpoint: str | None = None
    _config: OutcropConfig | None = field(default=None, repr=False)

    @classmethod
    def of(cls, ctx: typer.Context) -> CliState:
        state: CliState = ctx.ensure_object(cls)
        return state

    def overrides(self) -> dict[str, Any]:
        """The config overrides these options make (dotted keys, as ``load_config`` takes them)."""
        overrides: dict[str, Any] = {}
        if self.data_dir is not None:
            overrides["data_dir"] = self.data_dir
        if self.database_url is not None:
            overrides["store.database_url"] = self.database_url
        return overrides

    def config(self) -> OutcropConfig:
        if self._config is None:
            self._config = load_config(**self.overrides())
        return self._config

    def client(self, endpoint: str | None = None) -> Client:
        """A client with the caller's API key: $OUTCROP_API_KEY, else the admin's from the data dir."""
        config = self.config()
        from_env = cli_api_key()
        api_key = from_env or (read_credentials(config) or {}).get("api_key")
        if from_env:
            source = (
                "the key in $OUTCROP_API_KEY; unset it to use the admin key of the data dir, "
                "or set it to a key from `outcrop keys create`"
            )
        else:
            source = (
                f"the api_key in {config.credentials_path}, which may belong to another server: "
                "pass the server's data dir with --data-dir (or $OUTCROP_DATA_DIR), or set OUTCROP_API_KEY"
            )
        if api_key is None:
            err_console.print(
                f"[yellow]note:[/] no credentials: {config.credentials_path} does not exist and OUTCROP_API_KEY "
                "is not set. Pass the server's --data-dir, or set OUTCROP_API_KEY to a key from "
                "`outcrop keys create`.",
                highlight=False,
            )
        return Client(
            endpoint or self.endpoint or default_endpoint(config), api_key=api_key, key_source=source
        )

    def emit_json(self, data: Any) -> bool:
        """With --json, print ``data`` as JSON on stdout and return True (the caller prints nothing else)."""
        if not self.json_output:
            return False
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return True


def _recorder(attribute: str) -> Callable[[typer.Context, Any], Any]:
    """An option callback that records a value given on the command line (a default changes nothing)."""

    def record(ctx: typer.Context, value: Any) -> Any:
        if value is not None and value is not False:
            setattr(CliState.of(ctx), attribute, value)
        return value

    return record


_PANEL = "Shared options (before or after the command)"

_COMMON: dict[str, tuple[Any, Any]] = {
    "data_dir": (
        Path | None,
        typer.Option(
            None,
            "--data-dir",
            help="Data folder (default ~/.outcrop; $OUTCROP_DATA_DIR).",
            callback=_recorder("data_dir"),
            rich_help_panel=_PANEL,
        ),
    ),
    "database_url": (
        str | None,
        typer.Option(
            None,
            "--database-url",
            help="Metadata store URL (default SQLite).",
            callback=_recorder("database_url"),
            rich_help_panel=_PANEL,
        ),
    ),
    "json_output": (
        bool,
        typer.Option(
            False,
            "--json",
            help="Print listings and details as JSON (the API's own fields), for scripts.",
            callback=_recorder("json_output"),
            rich_help_panel=_PANEL,
        ),
    ),
}
_ENDPOINT: dict[str, tuple[Any, Any]] = {
    "endpoint": (
        str | None,
        typer.Option(
            None,
            "--endpoint",
            "-e",
            help="URL of the Outcrop server (default: $OUTCROP_ENDPOINT or http://127.0.0.1:8080).",
            callback=_recorder("endpoint"),
            rich_help_panel=_PANEL,
        ),
    ),
}

YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def shared_options(fn: F | None = None, *, endpoint: bool = False) -> Any:
    """Add the shared options to a command; their values go to ``CliState.of(ctx)``, not to ``fn``.

    Use as ``@shared_options`` or ``@shared_options(endpoint=True)`` under ``@app.command()``.
    """

    def decorate(fn: F) -> F:
        extra = {**_COMMON, **(_ENDPOINT if endpoint else {})}
        hints = typing.get_type_hints(fn)
        signature = inspect.signature(fn)
        params = [
            p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
        ]
        params += [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
            for name, (annotation, option) in extra.items()
        ]

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            for name in extra:
                kwargs.pop(name, None)
            return fn(*args, **kwargs)

        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return typing.cast(F, command)

    return decorate(fn) if fn is not None else decorate


class _Argument(TyperArgument):
    """An argument shown as ``MODEL`` in the usage line (typer writes a required one as ``{model}``)."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw.upper()
        return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")


def tidy_help(command: Any) -> None:
    """Help pages as people read them: arguments as ``MODEL``, no ``<bool>`` type on flags.

    Applied once to the built command tree (each command's ``--help`` flag included).
    """
    for param in command.params:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""  # a flag takes no value: no type to show
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
    help_option = command.get_help_option(typer.Context(command))
    if help_option is not None:
        help_option.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)


class OutcropGroup(TyperGroup):
    """The root command: the CLI's one error edge (an ``OutcropError`` becomes one red line, exit 1).

    Its help pages, and its subcommands', are tidied once built (:func:`tidy_help`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy_help(self)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except OutcropError as exc:
            print_error(exc.message)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
