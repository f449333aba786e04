"""The cross-table checks of `feed.io.load_dataset`, run on a store's export before anything is written.

An exported event must name a video of the catalog (when the store has videos), a video's product must be
in the catalog (when the store has products), and a purchase without product_id needs its video's product.
Exporting fails with the unknown ids listed rather than drop catalog tables silently: a dataset without its
catalog would train a weaker model without anyone noticing.
"""

from __future__ import annotations

import pandas as pd

from feed.schema import Dataset

SHOWN_IDS = 10  # unknown ids quoted per problem


def unknown_references(dataset: Dataset) -> list[str]:
    """One message per broken cross-table reference (empty when `load_dataset` would accept the dataset)."""
    events, videos, products = dataset.events, dataset.videos, dataset.products
    problems = []
    if videos is not None:
        problems.append(_missing(events["video_id"], videos["video_id"], "events", "video_id", "videos"))
        if products is not None:
            linked = videos["product_id"].dropna()
            problems.append(_missing(linked, products["product_id"], "videos", "product_id", "products"))
    problems.append(_unpriced_purchases(events, videos))
    return [p for p in problems if p]


def _missing(ids: pd.Series, known: pd.Series, table: str, column: str, target: str) -> str:
    """'N <table> rows name M <column>s missing from <target>: a, b, …', or '' when none is missing."""
    unknown = ids[~ids.isin(known)]
    if unknown.empty:
        return ""
    distinct = sorted(unknown.unique())
    more = f" … ({len(distinct) - SHOWN_IDS} more)" if len(distinct) > SHOWN_IDS else ""
    return (f"{len(unknown)} {table} rows name {len(distinct)} {column}(s) missing from the {target} table: "
            f"{', '.join(map(str, distinct[:SHOWN_IDS]))}{more}")


def _unpriced_purchases(events: pd.DataFrame, videos: pd.DataFrame | None) -> str:
    """Purchases with no product_id whose video has no product either (or no videos table at all)."""
    orphan = events[(events["event"] == "purchase") & events["product_id"].isna()]
    if videos is not None:
        linked = videos.loc[videos["product_id"].notna(), "video_id"]
        orphan = orphan[~orphan["video_id"].isin(linked)]
    if orphan.empty:
        return ""
    where = "the videos table gives none for their video" if videos is not None else "there is no videos table"
    ids = ", ".join(orphan["event_id"].head(SHOWN_IDS).astype(str))
    return f"{len(orphan)} purchase(s) have no product_id and {where}: event_id {ids}"
