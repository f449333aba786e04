"""Share cascades: share links as a forest, and how far each tree reached and what was bought through it.

Pure pandas. A cascade is named by its root link. Its reach is the distinct users with any event that came
through one of its links, read from `came_through` pairs (so that a database can send those pairs instead of
every event); its purchases are the given orders (`feed.analytics.orders`) bought through one of its links.
`feed.analytics` re-exports the frame-level helpers `cascades`, `reach_by` and `reach_total`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

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
    for share, via in zip(*as_lists(made, "share_id", "via_share_id"), strict=True):
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
    root_of = dict(zip(*as_lists(tree, "share_id", "root_share_id"), strict=True))
    video_of = dict(zip(*as_lists(tree, "share_id", "video_id"), strict=True))
    users = _users_by(reached, root_of)
    through = Counter(root_of[via] for via in bought["via_share_id"].tolist() if via in root_of)
    depth: dict[str, int] = {}
    for root, level in zip(*as_lists(tree, "root_share_id", "depth"), strict=True):
        depth[root] = max(depth.get(root, 0), int(level))
    roots = sorted(depth)  # (n_roots,) as groupby would order them
    shares = Counter(tree["root_share_id"].tolist())
    return pd.DataFrame({
        "root_share_id": pd.Series(roots, dtype="str"),
        "video_id": pd.Series([video_of[r] for r in roots], dtype="str"),
        **{name: np.array(values, dtype=np.int64) for name, values in (
            ("shares", [shares[r] for r in roots]), ("reached_users", [len(users.get(r, ())) for r in roots]),
            ("max_depth", [depth[r] for r in roots]), ("purchases", [through[r] for r in roots]))}})


def per_video(tree: pd.DataFrame, roots: pd.DataFrame, reached: pd.DataFrame) -> pd.DataFrame:
    """Cascade reach per video (of the root share), from `per_root` rows: cascades, shares, reached_users, …"""
    video_of = dict(zip(*as_lists(roots, "root_share_id", "video_id"), strict=True))
    root_of = dict(zip(*as_lists(tree, "share_id", "root_share_id"), strict=True))
    users = _users_by(reached, {link: video_of[root] for link, root in root_of.items() if root in video_of})
    out: dict[str, list[int]] = {}  # video → [cascades, shares, max_depth, purchases]
    for video, shares, depth, bought in zip(*as_lists(roots, "video_id", "shares", "max_depth", "purchases"),
                                            strict=True):
        row = out.setdefault(video, [0, 0, 0, 0])
        row[0], row[1], row[2], row[3] = row[0] + 1, row[1] + shares, max(row[2], depth), row[3] + bought
    videos = sorted(out)
    table = pd.DataFrame([out[v] for v in videos], index=pd.Index(videos, dtype="str", name="video_id"),
                         columns=["cascades", "shares", "max_depth", "purchases"], dtype="int64")
    return table.assign(reached_users=np.array([len(users.get(v, ())) for v in videos], dtype=np.int64))


def overall(tree: pd.DataFrame, reached: pd.DataFrame, bought: pd.DataFrame) -> dict[str, int]:
    """Cascade reach over every cascade of `tree` together."""
    links = set(tree["share_id"].tolist())
    came = zip(*as_lists(reached, "via_share_id", "user_id"), strict=True)
    return {"cascades": int(tree["root_share_id"].nunique()), "shares": len(tree),
            "reached_users": len({user for via, user in came if via in links}),
            "max_depth": int(tree["depth"].max()) if len(tree) else 0,
            "purchases": sum(via in links for via in bought["via_share_id"].tolist())}


def video_reach(reach: dict[str, dict[str, int]], video_id: str) -> dict[str, int]:
    """A video's row of `per_video` (as `to_dict("index")`) as JSON: zeros without shares."""
    row = reach.get(video_id)
    return dict.fromkeys(REACH, 0) if row is None else {name: int(row[name]) for name in REACH}


def _users_by(reached: pd.DataFrame, group_of: dict[str, str]) -> dict[str, set[str]]:
    """The distinct users of `came_through` pairs per group of their link (links without a group are left out)."""
    users: dict[str, set[str]] = {}
    for via, user in zip(*as_lists(reached, "via_share_id", "user_id"), strict=True):
        if via in group_of:
            users.setdefault(group_of[via], set()).add(user)
    return users


def as_lists(frame: pd.DataFrame, *names: str) -> list[list[Any]]:
    """Columns as Python lists, to loop over (a pandas string column yields its values ~8x slower)."""
    return [frame[name].tolist() for name in names]
