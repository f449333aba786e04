"""The training package's `feed` subcommands: generate, validate, train."""

from __future__ import annotations

from pathlib import Path

import click

from feed.errors import ConfigError


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the world to.")
@click.option("--users", type=click.IntRange(1), default=5000, show_default=True)
@click.option("--creators", type=click.IntRange(1), default=300, show_default=True)
@click.option("--products", type=click.IntRange(1), default=1500, show_default=True)
@click.option("--videos", type=click.IntRange(1), default=4000, show_default=True)
@click.option("--days", type=click.IntRange(1), default=30, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
def generate(out: Path, users: int, creators: int, products: int, videos: int, days: int, seed: int,
             fmt: str) -> None:
    """Generate a synthetic self-retail world (events, catalog, friend graph and ground truth)."""
    from feed.world import WorldParams, generate_world, save_world

    params = WorldParams(users=users, creators=creators, products=products, videos=videos, days=days, seed=seed)
    world = generate_world(params, progress=True)
    save_world(world, out, fmt)
    counts = world.dataset.events["event"].value_counts().to_dict()
    click.echo(f"wrote {len(world.dataset.events):,} events to {out}: " +
               ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))


@click.command()
@click.argument("data", type=click.Path(path_type=Path, exists=True, file_okay=False))
def validate(data: Path) -> None:
    """Check a dataset folder against the data contract and print its table sizes."""
    from feed.io import load_dataset

    dataset = load_dataset(data)
    for name in ("events", "videos", "products", "follows"):
        table = getattr(dataset, name)
        click.echo(f"{name:9s} {'absent' if table is None else f'{len(table):,} rows'}")
    click.echo("ok: the dataset follows the contract")


@click.command()
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="Dataset folder (events + optional catalog, CSV or Parquet).")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="YAML config (see configs/train.yaml for every key).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts/bundle"), show_default=True,
              help="Folder to write the model bundle to.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./.mlflow/mlflow.db).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. --set als.factors=32 (repeatable).")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow or register the model.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def train(data: Path, config_path: Path | None, out: Path, tracking_uri: str | None, sets: tuple[str, ...],
          no_track: bool, quiet: bool) -> None:
    """Train ALS for videos, creators and products; evaluate; write a bundle; register it in MLflow."""
    from training.config import dotted, load_config
    from training.pipeline import run_training

    overrides = dotted(parse_sets(sets))
    if tracking_uri:
        overrides.setdefault("mlflow", {})["tracking_uri"] = tracking_uri
    config = load_config(config_path, overrides)
    result = run_training(data, config, out, track=not no_track, quiet=quiet)
    click.echo(f"bundle: {result.bundle_dir}")
    if result.model_version:
        click.echo(f"registered {config.mlflow.registered_model} version {result.model_version} "
                   f"as @{config.mlflow.alias} (run {result.run_id}) in {result.tracking_uri}")


def parse_sets(sets: tuple[str, ...]) -> dict[str, object]:
    """{'als.factors': 32} from ('als.factors=32',); values parsed as YAML scalars."""
    import yaml

    parsed: dict[str, object] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed
