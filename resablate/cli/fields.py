"""``resablate fields``: every field of a trial's config with what it means, its default (each
family's, where a family sets it) and its legal values, wrapped to the terminal."""

from __future__ import annotations

import textwrap

import click
from rich.console import Console
from rich.markup import escape

WIDTH = 100  # columns at most, however wide the terminal


@click.command()
def fields() -> int:
    """List every field of a trial's config: what it means, its default and its legal values.

    Any of them can be set in a sweep file's sections, overridden with --set, and swept as a
    grid axis by its dotted path (grid: {model.depth: [2, 4, 8]}). A model field a family sets
    itself shows each family's default (mlp, mnist, cifar, imagenet: basic units).
    """
    show_fields()
    return 0


def show_fields() -> None:
    """The catalog's fields, by section, each with its help, default and values lines."""
    from resablate.spec.catalog import describe

    out = Console(highlight=False)
    width = min(out.width, WIDTH)

    def wrapped(text: str, indent: str) -> str:
        lines = textwrap.wrap(
            text,
            width,
            initial_indent=indent,
            subsequent_indent=indent + "  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        return "\n".join(lines)

    out.print("Trial config fields (the sweep sections seed, model, init, data, train)\n")
    section = None
    for field in describe():
        if field.path.partition(".")[0] != section and "." in field.path:
            section = field.path.partition(".")[0]
            out.print(f"\n[bold]{section}[/bold]")
        out.print(f"[bold cyan]{field.path}[/bold cyan]")
        out.print(escape(wrapped(field.help, "    ")))
        out.print(escape(wrapped(f"default {field.shown_default()}", "    ")))
        out.print(escape(wrapped(f"values  {field.legal}", "    ")))
