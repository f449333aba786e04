"""Share cascades: share links as a forest, and how far each tree reached and what was bought through it.

Pure pandas. A cascade is named by its root link. Its reach is the distinct users with any event that came
through one of its links, read from `came_through` pairs (so that a database can send those pairs instead of
every event); its purchases are the given orders (`feed.analytics.orders`) bought through one of its links.
`feed.analytics` re-exports the frame-level helpers `cascades`, `reach_by` and `reach_total`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REACH = ("cascades", "shares", "reached_users", "max_depth", "purchases")  # a reach row's counts


def share_tree(events: pd.DataFrame) -> pd.DataFrame:
    """Share links as a forest: share_id, user_id, video_id, parent_share_id, root_share_id, depth (root 1), ts.

    A share's parent is the link it was made through (its via_share_id) when that link was made before it (by
    ts, then event_id); any other parent (missing, itself, later: a cycle or skewed clocks) makes it a root.
    """
    made = events[(events["event"] == "share") & events["share_id"].notna()]
    made = made.sort_values([c for c in ("ts", "event_id") if c in made.columns], kind="stable")
    made = made.drop_duplicates("share_id", keep="first")
    roots: dict[str, str] = {}
    depths: dict[str, int] = {}
    parents: list[str | None] = []
    for share, via in zip(made["share_id"], made["via_share_id"], strict=True):
        parent = via if isinstance(via, str) and via in roots else None  # only links made earlier are known
        roots[share] = share if parent is None else roots[parent]
        depths[share] = 1 if parent is None else depths[parent] + 1
        parents.append(parent)
    ids = made["share_id"].astype("str").tolist()
    return pd.DataFrame({
        "share_id": pd.Series(ids, dtype="str"), "user_id": made["user_id"].astype("str").to_numpy(),
        "video_id": made["video_id"].astype("str").to_numpy(), "parent_share_id": pd.Series(parents, dtype="str"),
        "root_share_id": pd.Series([roots[s] for s in ids], dtype="str"),
        "depth": np.array([depths[s] for s in ids], dtype=np.int64), "ts": made["ts"].to_numpy()})


def came_through(events: pd.DataFrame, tree: pd.DataFrame) -> pd.DataFrame:
    """The distinct (via_share_id, user_id) of the events that came through one of the tree's links."""
    came = events[events["via_share_id"].isin(list(tree["share_id"]))]
    return came[["via_share_id", "user_id"]].drop_duplicates(ignore_index=True)


def per_root(tree: pd.DataFrame, reached: pd.DataFrame, bought: pd.DataFrame) -> pd.DataFrame:
    """Per root share: video_id, shares, reached_users, max_depth, purchases (orders of `bought` through it)."""
    root_of = dict(zip(tree["share_id"], tree["root_share_id"], strict=True))
    came = reached[reached["via_share_id"].isin(list(root_of))]
    came = came.assign(root=came["via_share_id"].map(root_of))
    through = bought[bought["via_share_id"].isin(list(root_of))]
    out = tree.groupby("root_share_id").agg(shares=("share_id", "size"), max_depth=("depth", "max"))
    out["video_id"] = tree.set_index("share_id")["video_id"].reindex(out.index)
    out["reached_users"] = came.groupby("root")["user_id"].nunique().reindex(out.index, fill_value=0)
    out["purchases"] = through["via_share_id"].map(root_of).value_counts().reindex(out.index, fill_value=0)
    out = out.reset_index()[["root_share_id", "video_id", "shares", "reached_users", "max_depth", "purchases"]]
    return out.astype({c: "int64" for c in ("shares", "reached_users", "max_depth", "purchases")})


def per_video(tree: pd.DataFrame, roots: pd.DataFrame, reached: pd.DataFrame) -> pd.DataFrame:
    """Cascade reach per video (of the root share), from `per_root` rows: cascades, shares, reached_users, …"""
    video_of = dict(zip(roots["root_share_id"], roots["video_id"], strict=True))
    root_of = dict(zip(tree["share_id"], tree["root_share_id"], strict=True))
    came = reached[reached["via_share_id"].isin(list(root_of))]
    out = roots.groupby("video_id").agg(cascades=("root_share_id", "size"), shares=("shares", "sum"),
                                        max_depth=("max_depth", "max"), purchases=("purchases", "sum"))
    group = came["via_share_id"].map(root_of).map(video_of).to_numpy()
    out["reached_users"] = came.groupby(group)["user_id"].nunique().reindex(out.index, fill_value=0)
    return out.astype("int64")


def overall(tree: pd.DataFrame, reached: pd.DataFrame, bought: pd.DataFrame) -> dict[str, int]:
    """Cascade reach over every cascade of `tree` together."""
    links = list(tree["share_id"])
    return {"cascades": int(tree["root_share_id"].nunique()), "shares": len(tree),
            "reached_users": int(reached.loc[reached["via_share_id"].isin(links), "user_id"].nunique()),
            "max_depth": int(tree["depth"].max()) if len(tree) else 0,
            "purchases": int(bought["via_share_id"].isin(links).sum())}


def video_reach(reach: pd.DataFrame, video_id: str) -> dict[str, int]:
    """A video's row of `per_video` as JSON (zeros without shares)."""
    if video_id not in reach.index:
        return dict.fromkeys(REACH, 0)
    return {name: int(reach.at[video_id, name]) for name in REACH}
