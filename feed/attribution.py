"""Share-cascade attribution and the commission ledger's rules: what each order owes whom, to the cent.

The documented default rule (every number in `LedgerRules`):
- a purchase is credited to the video it was made through, so to that video's creator, at the product's
  commission rate in effect at the purchase time (`RateBook`: a rate change applies to later purchases only);
- when it came through a share link (`via_share_id`) that another user created before the purchase and within
  `window_days`, that direct sharer earns `sharer_rate` × amount; sharers further up the cascade earn nothing;
- a buyer earns nothing from their own purchase, as creator or as sharer;
- refunds of the order claw back its accruals in proportion (cumulatively, so a full refund nets to zero);
- accruals settle `settlement_days` after the purchase, net of the refunds made before that moment.

`order_targets` gives, for one order, the total each (beneficiary, role, kind) must reach; the store appends
the difference between those totals and what the ledger already holds, so processing is idempotent and the
result does not depend on the order events arrive in. `compute_ledger` is the same rule over a whole dataset.
Amounts are integer cents, rounded half up.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd

DAY_MS = 86_400_000
ROLES = ("creator", "sharer")
KINDS = ("accrual", "clawback", "settlement")
ENTRY_COLUMNS = ("entry_id", "order_id", "beneficiary_id", "role", "kind", "amount", "currency", "ts",
                 "video_id", "product_id")


@dataclass(frozen=True)
class LedgerRules:
    """The attribution and settlement rule's numbers."""

    window_days: float = 7.0  # a share link earns for purchases at most this long after it was created
    sharer_rate: float = 0.02  # the direct sharer's commission, as a fraction of the amount paid
    settlement_days: float = 7.0  # accruals settle this long after the purchase, net of earlier refunds
    currency: str = "USD"

    def __post_init__(self) -> None:
        if not (self.window_days >= 0 and self.settlement_days >= 0 and 0 <= self.sharer_rate <= 1):
            raise ValueError(f"ledger rules need window_days >= 0, settlement_days >= 0 and 0 <= sharer_rate "
                             f"<= 1, got {self}")
        if not self.currency.isalpha() or len(self.currency) != 3:
            raise ValueError(f"currency must be a 3-letter ISO code such as USD, got {self.currency!r}")


@dataclass
class RateBook:
    """Every product's commission rates with the time each took effect (epoch ms, ascending)."""

    starts: dict[str, list[int]] = field(default_factory=dict)
    rates: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> RateBook:
        """From rows (product_id, valid_from [epoch ms], rate)."""
        book = cls()
        ordered = frame.sort_values(["product_id", "valid_from"], kind="stable")
        for product, start, rate in zip(ordered["product_id"].astype(str), ordered["valid_from"].astype("int64"),
                                        ordered["rate"].astype(float), strict=True):
            book.starts.setdefault(product, []).append(int(start))
            book.rates.setdefault(product, []).append(float(rate))
        return book

    @classmethod
    def current(cls, products: pd.DataFrame | None) -> RateBook:
        """One version per product: its catalog rate, valid since the beginning (a dataset has no history)."""
        if products is None:
            return cls()
        known = products[products["commission_rate"].notna()]
        return cls.from_frame(pd.DataFrame({"product_id": known["product_id"].astype(str), "valid_from": 0,
                                            "rate": known["commission_rate"].astype(float)}))

    def rate(self, product_id: str | None, ts_ms: int) -> float:
        """The rate in effect at ts_ms (the first version's when ts_ms precedes them all); 0 when unknown."""
        starts = self.starts.get(product_id or "")
        if not starts:
            return 0.0
        return self.rates[product_id][max(bisect_right(starts, ts_ms) - 1, 0)]


@dataclass(frozen=True)
class Purchase:
    """The facts of one order that attribution needs."""

    order_id: str
    buyer: str
    ts: int  # epoch ms
    amount: float
    video_id: str
    product_id: str | None
    creator: str | None  # the video's creator; None when the catalog does not know the video
    via_share_id: str | None


@dataclass(frozen=True)
class Share:
    """A share link: who created it and when."""

    user_id: str
    ts: int


@dataclass(frozen=True)
class Target:
    """The total one (beneficiary, role, kind) of an order must reach, with the entry's time."""

    cents: int
    ts: int


Key = tuple[str, str, str, str]  # (beneficiary_id, role, kind, ref): ref is the refund event of a clawback, else ""
Refund = tuple[int, float | None, str]  # (ts ms, amount or None for all of it, refund event_id)


def cents(value: Decimal) -> int:
    """Decimal currency units → integer cents, rounded half up."""
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def commission_cents(amount: float, rate: float) -> int:
    """amount × rate in cents, half up, computed in decimal (19.99 × 0.1 → 200)."""
    return cents(Decimal(repr(float(amount))) * Decimal(repr(float(rate))))


def accruals(purchase: Purchase, share: Share | None, rates: RateBook, rules: LedgerRules) -> dict[Key, int]:
    """(beneficiary, role, 'accrual') → cents this purchase earns; empty when nobody earns."""
    out: dict[Key, int] = {}
    if purchase.creator and purchase.creator != purchase.buyer:
        earned = commission_cents(purchase.amount, rates.rate(purchase.product_id, purchase.ts))
        if earned > 0:
            out[(purchase.creator, "creator", "accrual", "")] = earned
    if share is not None and credits_sharer(purchase, share, rules):
        earned = commission_cents(purchase.amount, rules.sharer_rate)
        if earned > 0:
            out[(share.user_id, "sharer", "accrual", "")] = earned
    return out


def credits_sharer(purchase: Purchase, share: Share, rules: LedgerRules) -> bool:
    """Whether the share link's creator earns from the purchase: another user, before it, within the window."""
    return (share.user_id != purchase.buyer and share.ts <= purchase.ts
            and purchase.ts - share.ts <= rules.window_days * DAY_MS)


def order_targets(purchase: Purchase, share: Share | None, refunds: Iterable[Refund], rates: RateBook,
                  rules: LedgerRules, now_ms: int) -> dict[Key, Target]:
    """The totals every (beneficiary, role, kind, ref) of the order must reach, given its refunds.

    A refund without an amount refunds the whole order. Each refund claws back its own share, dated at the
    refund (so a day's commission does not depend on when refunds were processed); clawbacks are negative and
    together never exceed the accrual.
    """
    refunds = sorted((int(ts), purchase.amount if amount is None or np.isnan(amount) else float(amount), str(rid))
                     for ts, amount, rid in refunds)
    settle_at = settle_time(purchase, rules)
    targets: dict[Key, Target] = {}
    for (who, role, _, _), accrued in accruals(purchase, share, rates, rules).items():
        targets[(who, role, "accrual", "")] = Target(accrued, purchase.ts)
        before = 0
        for i, (ts, _, rid) in enumerate(refunds):  # cumulative, so rounding never leaves a cent behind
            upto = _clawback(accrued, purchase.amount, [a for _, a, _ in refunds[:i + 1]])
            targets[(who, role, "clawback", rid)] = Target(before - upto, ts)
            before = upto
        if now_ms >= settle_at:
            early = [a for ts, a, _ in refunds if ts < settle_at]
            targets[(who, role, "settlement", "")] = Target(accrued - _clawback(accrued, purchase.amount, early),
                                                            settle_at)
    return targets


def settle_time(purchase: Purchase, rules: LedgerRules) -> int:
    """When the order's accruals settle (epoch ms)."""
    return purchase.ts + int(round(rules.settlement_days * DAY_MS))


def _clawback(accrued: int, paid: float, refunded: list[float]) -> int:
    """The cents of `accrued` that refunds of `refunded` (of `paid`) take back, in proportion, at most all."""
    if not refunded or paid <= 0:
        return 0
    share = min(Decimal(repr(sum(refunded))) / Decimal(repr(float(paid))), Decimal(1))
    return min(cents(Decimal(accrued) / 100 * share), accrued)


def deltas(targets: Mapping[Key, Target], held: Mapping[Key, int], ts: int) -> dict[Key, Target]:
    """What to append so the ledger's sums reach the targets; keys no longer targeted go to 0 at `ts`."""
    out = {key: Target(t.cents - held.get(key, 0), t.ts) for key, t in targets.items()
           if t.cents != held.get(key, 0)}
    for key, total in held.items():
        if key not in targets and total != 0:
            out[key] = Target(-total, ts)
    return out


def entry_id(order_id: str, key: Key, n: int) -> str:
    """A deterministic id for the n-th entry (0-based) of (order, beneficiary, role, kind, ref)."""
    text = "\x1f".join((order_id, *key, str(n)))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# --- the same rule over a whole dataset ---------------------------------------------------------------------


def purchases_of(events: pd.DataFrame, videos: pd.DataFrame | None) -> dict[str, Purchase]:
    """Each order's first purchase event (by ts, then event_id), with the video's creator and product."""
    bought = events[events["event"] == "purchase"].sort_values(["ts", "event_id"], kind="stable")
    bought = bought.drop_duplicates("order_id", keep="first")
    creator = {} if videos is None else dict(zip(videos["video_id"], videos["creator_id"], strict=True))
    product = {} if videos is None else dict(zip(videos["video_id"], videos["product_id"], strict=True))
    out = {}
    for row in bought.itertuples(index=False):
        own_product = None if pd.isna(row.product_id) else str(row.product_id)
        video_product = product.get(row.video_id)
        out[str(row.order_id)] = Purchase(
            order_id=str(row.order_id), buyer=str(row.user_id), ts=_ms(row.ts), amount=float(row.amount),
            video_id=str(row.video_id),
            product_id=own_product or (None if pd.isna(video_product) else str(video_product)),
            creator=creator.get(row.video_id), via_share_id=None if pd.isna(row.via_share_id) else str(row.via_share_id))
    return out


def shares_of(events: pd.DataFrame) -> dict[str, Share]:
    """Each share link's creation (its first share event)."""
    made = events[(events["event"] == "share") & events["share_id"].notna()].sort_values(["ts", "event_id"])
    made = made.drop_duplicates("share_id", keep="first")
    return {str(s): Share(str(u), _ms(t)) for s, u, t in zip(made["share_id"], made["user_id"], made["ts"],
                                                               strict=True)}


def compute_ledger(events: pd.DataFrame, videos: pd.DataFrame | None, rates: RateBook, rules: LedgerRules,
                   now_ms: int) -> pd.DataFrame:
    """The whole ledger of a dataset as of `now_ms`: one entry per non-zero target, in ENTRY_COLUMNS."""
    shares = shares_of(events)
    refunds = refunds_by_order(events)
    rows = []
    for order, purchase in purchases_of(events, videos).items():
        share = shares.get(purchase.via_share_id or "")
        for key, target in order_targets(purchase, share, refunds.get(order, []), rates, rules, now_ms).items():
            if target.cents:
                rows.append(entry_row(purchase, key, target, 0, rules.currency))
    return entries_frame(rows)


def entry_row(purchase: Purchase, key: Key, target: Target, n: int, currency: str) -> dict[str, object]:
    """One ledger entry of `target.cents` for (order, beneficiary, role, kind, ref), the n-th of its key."""
    who, role, kind, ref = key
    return {"entry_id": entry_id(purchase.order_id, key, n), "order_id": purchase.order_id, "beneficiary_id": who,
            "role": role, "kind": kind, "amount_cents": target.cents, "currency": currency, "ts": target.ts,
            "video_id": purchase.video_id, "product_id": purchase.product_id, "ref": ref}


def entries_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Entry rows (amount_cents, ts in epoch ms) → the ledger frame: amount in currency units, ts as UTC times."""
    frame = pd.DataFrame(rows, columns=[*ENTRY_COLUMNS[:5], "amount_cents", *ENTRY_COLUMNS[6:]])
    amount = frame.pop("amount_cents").astype("int64")
    frame.insert(5, "amount", amount / 100)
    frame["ts"] = pd.to_datetime(frame["ts"].astype("int64"), unit="ms", utc=True).astype("datetime64[ms, UTC]")
    return frame[list(ENTRY_COLUMNS)]


def refunds_by_order(events: pd.DataFrame) -> dict[str, list[Refund]]:
    """order_id → [(ts ms, amount or None, event_id)] of its refund events."""
    refunds = events[(events["event"] == "refund") & events["order_id"].notna()]
    out: dict[str, list[Refund]] = {}
    for order, ts, amount, rid in zip(refunds["order_id"], refunds["ts"], refunds["amount"], refunds["event_id"],
                                      strict=True):
        out.setdefault(str(order), []).append((_ms(ts), None if pd.isna(amount) else float(amount), str(rid)))
    return out


def _ms(ts: pd.Timestamp) -> int:
    """A timestamp as epoch milliseconds."""
    return int(pd.Timestamp(ts).value // 1_000_000)
