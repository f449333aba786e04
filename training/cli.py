"""The training package's `feed` subcommands: generate, validate, train."""

from __future__ import annotations

from pathlib import Path

import click

from feed.errors import ConfigError

DEFAULT_MODEL_NAMES = ("popularity", "implicit-als", "als")  # the same tuple as training.evaluate.DEFAULT_MODELS


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
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Dataset folder (events + optional catalog, CSV or Parquet).")
@click.option("--store", "store_url", help="Train on what the service collected: an event store URL "
              "(exported next to the bundle, then read like --data).")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="YAML config (see configs/train.yaml for every key).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts/bundle"), show_default=True,
              help="Folder to write the model bundle to.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./.mlflow/mlflow.db).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. --set als.factors=32 (repeatable).")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow or register the model.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def train(data: Path | None, store_url: str | None, config_path: Path | None, out: Path, tracking_uri: str | None,
          sets: tuple[str, ...], no_track: bool, quiet: bool) -> None:
    """Train ALS for videos, creators and products; evaluate; write a bundle; register it in MLflow."""
    from training.config import dotted, load_config
    from training.pipeline import run_training

    if (data is None) == (store_url is None):
        raise click.UsageError("give exactly one of --data DIR and --store URL")
    if store_url is not None:
        data = Path(f"{out}.data")
        export_store(store_url, None, data)
        click.echo(f"exported the store to {data}", err=True)
    overrides = dotted(parse_sets(sets))
    if tracking_uri:
        overrides.setdefault("mlflow", {})["tracking_uri"] = tracking_uri
    config = load_config(config_path, overrides)
    result = run_training(data, config, out, track=not no_track, quiet=quiet)
    click.echo(f"bundle: {result.bundle_dir}")
    if result.model_version:
        click.echo(f"registered {config.mlflow.registered_model} version {result.model_version} "
                   f"(run {result.run_id}) in {result.tracking_uri}")
        click.echo(result.promotion)


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


@click.command()
@click.option("--name", default="selfretail-feed", show_default=True, help="Registered model name.")
@click.option("--version", "version", help="Version to promote [default: the newest].")
@click.option("--alias", default="champion", show_default=True)
@click.option("--metric", default="video.served.recall@20", show_default=True,
              help="Metric compared on the shared evaluation (higher is better).")
@click.option("--force", is_flag=True, help="Promote even if it does not beat the champion.")
@click.option("--rollback", is_flag=True, help="Give the alias back to the previous champion.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./.mlflow/mlflow.db).")
def promote(name: str, version: str | None, alias: str, metric: str, force: bool, rollback: bool,
            tracking_uri: str | None) -> None:
    """Move the alias to a version that beats the champion on the same evaluation, or roll back."""
    from feed.paths import resolve_tracking_uri
    from training import promote as gate

    uri = resolve_tracking_uri(tracking_uri)
    if rollback:
        if version or force:
            raise click.UsageError("--rollback takes no --version or --force")
        decision = gate.rollback(uri, name, alias)
        click.echo(f"@{alias} -> version {decision.version} ({decision.reason})")
        return
    decision = gate.promote(uri, name, version, alias, metric, force)
    click.echo(f"@{alias} -> version {decision.version} ({decision.reason})")


@click.command()
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Dataset folder (split by --split), or the catalog for --train-events/--test-events.")
@click.option("--split", "split_spec", default="time", show_default=True,
              help="time | time:FRACTION | time:DATE | leave-last-out[:purchase] | random:0.8,0.1,0.1")
@click.option("--train-events", type=click.Path(path_type=Path, exists=True),
              help="Given training events (file or folder), to reproduce a published split exactly.")
@click.option("--test-events", type=click.Path(path_type=Path, exists=True), help="Given test events.")
@click.option("--k", "ks", default="10,20,50", show_default=True, help="Cut-offs, comma separated.")
@click.option("--models", default=",".join(DEFAULT_MODEL_NAMES), show_default=True,
              help="Comma separated, among: popularity, implicit-als, als, own-cart, two-tower, blend.")
@click.option("--relation", type=click.Choice(["video", "creator", "product"]), default="video", show_default=True)
@click.option("--mask-events", default="", help="Mask only training items with these event types "
              "(e.g. purchase, for protocols that train on carts but hold out purchases). Default: all.")
@click.option("--cold-threshold", type=click.IntRange(1), default=5, show_default=True,
              help="Users with fewer training interactions form the 'cold' segment.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Training config (model hyperparameters, weights).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one config key (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random splits.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help="Write results as JSON.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./.mlflow/mlflow.db).")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
@click.option("--feed", "whole_feed", is_flag=True, help="Evaluate the whole feed instead: replay the first page "
              "of every held-out user (ranker vs retrieval-only vs popularity) on the time split of the config.")
@click.option("--page-size", type=click.IntRange(1, 100), default=20, show_default=True, help="--feed: page size K.")
@click.option("--max-users", type=click.IntRange(1), help="--feed: replay a seeded sample of this many users.")
def evaluate(data: Path | None, split_spec: str, train_events: Path | None, test_events: Path | None, ks: str,
             models: str, relation: str, mask_events: str, cold_threshold: int, config_path: Path | None,
             sets: tuple[str, ...], seed: int, json_path: Path | None, tracking_uri: str | None,
             no_track: bool, whole_feed: bool, page_size: int, max_users: int | None) -> None:
    """Evaluate models and baselines side by side on one split (full ranking, same positives and mask);
    with --feed, the whole feed pipeline instead."""
    import json

    from training import tracking
    from training.config import dotted, load_config
    from training.evaluate import load_split, print_report, run_evaluation

    if whole_feed:
        if data is None or train_events is not None or split_spec != "time":
            raise click.UsageError("--feed takes --data DIR and the config's time split (split.test_fraction)")
        config = load_config(config_path, dotted(parse_sets(sets)))
        evaluate_feed(data, config, page_size, max_users, json_path, None if no_track else tracking_uri or "")
        return
    overrides = dotted({**parse_sets(sets), "eval.ks": _int_list(ks, "--k")})
    config = load_config(config_path, overrides)
    split, catalog = load_split(data, split_spec, seed, train_events, test_events)
    report = run_evaluation(split, catalog, config, _names(models), relation, _names(mask_events),
                            cold_threshold, progress=False)
    print_report(report, config.eval.ks)
    if json_path:
        json_path.write_text(json.dumps(report.as_json(), indent=2))
    if not no_track:
        uri = tracking.resolve_tracking_uri(tracking_uri or config.mlflow.tracking_uri)
        params = {**report.params, "split": report.split, "relation": relation, "data": str(data or train_events),
                  "config_digest": config.digest()}
        run_id = tracking.log_evaluation(uri, config.mlflow.experiment, params, report.models)
        click.echo(f"logged to MLflow run {run_id} in {uri}", err=True)


def evaluate_feed(data: Path, config: object, page_size: int, max_users: int | None, json_path: Path | None,
                  tracking_uri: str | None) -> None:
    """`feed evaluate --feed`: replay, print, and write JSON and MLflow runs (tracking_uri None: no MLflow)."""
    import json

    from feed.io import load_dataset
    from training import tracking
    from training.feed_eval import print_feed_report, run_feed_evaluation

    report = run_feed_evaluation(load_dataset(data), config, page_size, max_users, progress=True)
    print_feed_report(report)
    if json_path:
        json_path.write_text(json.dumps(report.as_json(), indent=2))
    if tracking_uri is not None:
        uri = tracking.resolve_tracking_uri(tracking_uri or config.mlflow.tracking_uri)
        params = {"evaluation": "feed", "split": report.split, "k": page_size, "data": str(data),
                  "n_users": report.n_users, "config_digest": config.digest()}
        runs = {f"feed-{mode}": metrics for mode, metrics in report.modes.items()}
        run_id = tracking.log_evaluation(uri, config.mlflow.experiment, params, {**runs, "ranker": report.ranker})
        click.echo(f"logged to MLflow run {run_id} in {uri}", err=True)


def _names(text: str) -> list[str]:
    """Comma separated names, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _int_list(text: str, flag: str) -> list[int]:
    """Comma separated integers, with a clear error."""
    try:
        return [int(part) for part in _names(text)]
    except ValueError as exc:
        raise click.BadParameter(f"expected integers like 10,20,50, got {text!r}", param_hint=flag) from exc


@click.command(name="import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(["movielens", "lastfm", "taobao", "adjacency"]))
@click.argument("src", required=False, type=click.Path(path_type=Path, exists=True))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset folder to write.")
@click.option("--min-rating", type=click.IntRange(1, 5), help="movielens: keep ratings ≥ this (e.g. 4).")
@click.option("--file", "files", multiple=True, metavar="EVENT=PATH",
              help="adjacency: one file per event type, e.g. --file purchase=train.txt --file cart=cart.txt.")
@click.option("--ts", default="2020-01-01T00:00:00Z", show_default=True,
              help="adjacency: the time given to the events (the format has none).")
@click.option("--format", "out_fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
def import_(fmt: str, src: Path | None, out: Path, min_rating: int | None, files: tuple[str, ...], ts: str,
            out_fmt: str) -> None:
    """Turn a public dataset (MovieLens, Last.fm, Taobao, Beibei-style adjacency) into our schema."""
    from feed.importers import describe, import_adjacency, import_lastfm, import_movielens, import_taobao
    from feed.io import write_dataset

    if fmt == "adjacency":
        if src is not None or not files:
            raise click.UsageError("adjacency takes --file EVENT=PATH options instead of SRC")
        dataset = import_adjacency({k: Path(v) for k, v in _pairs(files).items()}, ts=ts)
    elif src is None:
        raise click.UsageError(f"{fmt} needs SRC (the file or the folder holding it)")
    elif fmt == "movielens":
        dataset = import_movielens(src, min_rating=min_rating)
    else:
        dataset = {"lastfm": import_lastfm, "taobao": import_taobao}[fmt](src)
    write_dataset(dataset, out, out_fmt)
    click.echo(f"wrote {out}: " + ", ".join(f"{k} {v:,}" for k, v in describe(dataset).items()))


def _pairs(items: tuple[str, ...]) -> dict[str, str]:
    """{'purchase': 'train.txt'} from ('purchase=train.txt',)."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise click.BadParameter(f"expected EVENT=PATH, got {item!r}", param_hint="--file")
        pairs[key] = value
    return pairs


@click.command()
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--split", "split_spec", default="time", show_default=True,
              help="Outer split; trials are scored on its valid side, or the last 20% of its training side.")
@click.option("--trials", type=click.IntRange(1), default=20, show_default=True)
@click.option("--metric", default="recall@20", show_default=True,
              help="Maximized on the validation split, e.g. recall@20, ndcg@20, purchase_recall@20.")
@click.option("--no-weights", is_flag=True, help="Keep the event weights; search only ALS hyperparameters.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Base config: every key not searched comes from here.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one base config key.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=Path("configs/tuned.yaml"),
              show_default=True, help="Where to write the best config (a full `feed train --config` file).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./.mlflow/mlflow.db).")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
def tune(data: Path, split_spec: str, trials: int, metric: str, no_weights: bool, config_path: Path | None,
         sets: tuple[str, ...], seed: int, out: Path, tracking_uri: str | None, no_track: bool) -> None:
    """Search ALS hyperparameters and event weights on a validation split; write the best config."""
    from rich.progress import Progress

    from training import tracking
    from training.config import dotted, load_config
    from training.evaluate import load_split
    from training.tune import tune as search
    from training.tune import write_config

    base = load_config(config_path, dotted({**parse_sets(sets), "seed": seed}))
    split, catalog = load_split(data, split_spec, seed, None, None)
    uri = None if no_track else tracking.resolve_tracking_uri(tracking_uri or base.mlflow.tracking_uri)
    parent = tracking.start_parent(uri, base.mlflow.experiment, "tune", {
        "data": str(data), "split": split.description, "metric": metric, "trials": trials}) if uri else None
    with Progress(transient=True) as progress:
        bar = progress.add_task("tuning", total=trials)

        def on_trial(number: int, overrides: dict, metrics: dict[str, float]) -> None:
            if uri and parent:
                tracking.log_child(uri, parent, f"trial-{number}", overrides, metrics)
            progress.update(bar, advance=1, description=f"trial {number}: {metric} {metrics[metric]:.4f}")

        result = search(split, catalog, base, trials, metric, not no_weights, on_trial)
    if uri and parent:
        tracking.finish(uri, parent, {f"best_{metric}": result.best_value})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_config(result.best_config, out, f"best of {trials} trials by validation {metric} = "
                 f"{result.best_value:.4f} on {data} ({split.description})")
    click.echo(f"best validation {metric} {result.best_value:.4f}; config written to {out}")


@click.group()
def events() -> None:
    """Read what the service collected in its event store."""


@events.command()
@click.option("--store", "store_url", required=True, help="Event store URL (e.g. sqlite:///.feed/store.db).")
@click.option("--since", help="Only events at or after this ISO date/time (UTC); default: all.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset folder to write.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
def export(store_url: str, since: str | None, out: Path, fmt: str) -> None:
    """Write the store's events (and its catalog) as a dataset folder that `feed train` reads."""
    from feed.splits import parse_date

    dataset = export_store(store_url, parse_date(since) if since else None, out, fmt)
    click.echo(f"wrote {len(dataset.events):,} events to {out}")


def export_store(store_url: str, since: object, out: Path, fmt: str = "parquet") -> object:
    """The store's events since a time, with its catalog, written to `out` as a dataset folder."""
    from feed.store.store import EventStore

    store = EventStore(store_url)
    try:
        store.check()
        return store.export(out, since, fmt)
    finally:
        store.close()
