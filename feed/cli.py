"""The `feed` command: only a dispatcher. Its subcommands live in `training/` and `serving/` and are found
through the `feed.commands` entry-point group, so the core library never imports them."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint, entry_points

import click

from feed import __version__
from feed.errors import FeedError

GROUP = "feed.commands"


def _commands() -> dict[str, EntryPoint]:
    """Registered subcommands by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


class EntryPointGroup(click.Group):
    """A click group whose commands are loaded lazily from entry points (so `--help` stays fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_commands())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        ep = _commands().get(cmd_name)
        return ep.load() if ep else None


@click.group(cls=EntryPointGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="feed")
def cli() -> None:
    """Self-retail feed: generate data, train, evaluate and serve personalized feeds of creator videos."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit 0 on success, 1 on a project error (message on stderr), 2 on bad usage."""
    try:
        cli.main(args=argv, prog_name="feed", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("feed: aborted", err=True)
        return 130
    except FeedError as exc:
        click.echo(f"feed: error: {exc}", err=True)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
