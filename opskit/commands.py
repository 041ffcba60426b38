"""The typer side of the CLI: the app, each spec command's parameters built from the table.

``spec_command`` adds the spec options a command shows (opskit.options.SPEC_OPTIONS),
with ``--config``, ``--set`` and, for commands that write files, the output options, to
the command's signature, so typer sees ordinary parameters (``__signature__`` and
resolved ``__annotations__``: typer reads both); the wrapper gathers them into a
``SpecArgs`` and an ``Output``. --help shows them in sections.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core

from opskit.options import Output, SpecArgs, SpecOption, options_for

if TYPE_CHECKING:
    from typer._click.core import Context
    from typer._click.formatting import HelpFormatter


def command_group(name: str, help: str) -> typer.Typer:
    """A typer app as opskit's commands need it: help without rich, no pretty tracebacks."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


app = command_group("opskit", "Production-hardened deployment artifacts for Python web services.")

#: The --help sections, in the order they are shown.
APP_PANEL = "App options (every command that reads the spec)"
COMMAND_PANEL = "Options"
SPEC_PANEL = "Spec options of this command (elsewhere: --set KEY=VALUE)"
CONFIG_PANEL = "Configuration"
OUTPUT_PANEL = "Output"
PANELS = (APP_PANEL, SPEC_PANEL, COMMAND_PANEL, CONFIG_PANEL, OUTPUT_PANEL)


def _whole_number(text: str) -> int:
    """An int flag's value: ASCII digits only (int() also takes other scripts' digits)."""
    from opskit.validate import ASCII_DIGITS

    if not ASCII_DIGITS.fullmatch(text.strip()):
        raise typer.BadParameter(f"{text!r} is not a whole number")
    return int(text)


def annotation(option: SpecOption) -> Any:
    """The typer annotation of a spec option's parameter."""
    kind: Any = {str: str, int: int, bool: bool, list: list[str]}[option.kind]
    decls = [f"{option.flags[0]}/--no-{option.flags[0][2:]}", *option.flags[1:]]
    info = typer.Option(
        *(decls if option.toggle else option.flags),
        help=option.help,
        metavar=option.metavar or ("<int>" if option.kind is int else None),
        parser=_whole_number if option.kind is int else None,
        show_default=False,
        rich_help_panel=APP_PANEL if option.everywhere else SPEC_PANEL,
    )
    return Annotated[kind | None, info]


# --- the generated parameters ----------------------------------------------------------------

_Name = Annotated[
    str | None, typer.Argument(help="Service name (unit name); default: name in the config.")
]
_NameOption = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Service name in the config.",
        show_default=False,
        rich_help_panel=CONFIG_PANEL,
    ),
]
_Config = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="opskit.toml or pyproject.toml to read.",
        dir_okay=False,
        rich_help_panel=CONFIG_PANEL,
    ),
]
_Set = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any spec key, KEY=VALUE with a TOML value (e.g. --set hardening.allow-wx=true).",
        rich_help_panel=CONFIG_PANEL,
    ),
]
_OutputDir = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="Directory to write into, or '-' for stdout.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
_Force = Annotated[
    bool, typer.Option("--force", help="Overwrite files that differ.", rich_help_panel=OUTPUT_PANEL)
]
_Check = Annotated[
    bool,
    typer.Option(
        "--check",
        help="Exit 1 if the files on disk differ; write nothing.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
_Diff = Annotated[
    bool,
    typer.Option(
        "--diff",
        help="Show how the files on disk differ; write nothing.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
_OUTPUT_PARAMS = {
    "output_dir": (_OutputDir, None),
    "force": (_Force, False),
    "check": (_Check, False),
    "diff": (_Diff, False),
}
_KW = inspect.Parameter.KEYWORD_ONLY
_POS = inspect.Parameter.POSITIONAL_OR_KEYWORD


class GroupedCommand(typer.core.TyperCommand):
    """A command whose --help lists its options in sections (typer's panels, without rich)."""

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        """Write the options section by section, in the order of ``PANELS``."""
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                panel = "Arguments"
            else:
                panel = getattr(param, "rich_help_panel", None) or COMMAND_PANEL
            sections.setdefault(panel, []).append(record)
        order = ["Arguments", *PANELS, *(p for p in sections if p not in PANELS)]
        for panel in dict.fromkeys(order):
            if sections.get(panel):
                with formatter.section(panel):
                    formatter.write_dl(sections[panel])


def spec_command(
    target: typer.Typer,
    command: str,
    *,
    output: str | None = None,
    name: str = "argument",
    help: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command that reads the spec, with the spec options it shows as flags.

    The decorated function takes its own parameters plus ``spec: SpecArgs`` (and, with
    ``output`` set to its default directory, ``out: Output``). ``name`` is "argument" (a
    positional NAME) or "option" (``--name``, for commands whose argument is something else).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        options = options_for(command)
        hints = typing.get_type_hints(func, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name])
            for p in inspect.signature(func).parameters.values()
            if p.name not in ("spec", "out")
        ]
        if name == "argument":
            head = [inspect.Parameter("name", _POS, default=None, annotation=_Name)]
        else:
            head = [inspect.Parameter("name", _KW, default=None, annotation=_NameOption)]
        positional = [p for p in own if p.kind is not _KW]
        keyword = [p for p in own if p.kind is _KW]
        if positional and name == "argument":
            raise TypeError(f"{command}: a positional NAME and other arguments")
        generated = [
            inspect.Parameter(o.param, _KW, default=None, annotation=annotation(o)) for o in options
        ]
        tail = [
            inspect.Parameter("config", _KW, default=None, annotation=_Config),
            inspect.Parameter("sets", _KW, default=None, annotation=_Set),
        ]
        if output is not None:
            tail += [
                inspect.Parameter(key, _KW, default=default, annotation=annotation)
                for key, (annotation, default) in _OUTPUT_PARAMS.items()
            ]
        params = [*positional, *head, *generated, *keyword, *tail]

        @functools.wraps(func)
        def wrapper(**values: Any) -> Any:
            given = tuple(
                (o, values.pop(o.param)) for o in options if values.get(o.param) is not None
            )
            for o in options:
                values.pop(o.param, None)
            spec = SpecArgs(
                command,
                values.pop("name"),
                values.pop("config"),
                tuple(values.pop("sets") or ()),
                given,
            )
            if output is not None:
                values["out"] = Output(
                    values.pop("output_dir"),
                    values.pop("force"),
                    values.pop("check"),
                    values.pop("diff"),
                    output,
                )
            return func(spec=spec, **values)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        target.command(command.rpartition(" ")[2], cls=GroupedCommand, help=help)(wrapper)
        return func

    return decorate
