"""Response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime

import orjson
from pydantic import BaseModel, Field

from feed.service import Feed, FeedItem


class ProductOut(BaseModel):
    """The product a video sells."""

    product_id: str
    price: float | None = Field(description="Price in the merchant's currency; null when unknown.")
    commission_rate: float | None = Field(description="Share of the price paid to the creator; null when unknown.")


class PredictedOut(BaseModel):
    """The ranker's calibrated probabilities for this user and video."""

    watch: float = Field(description="p(watched to the end)")
    share: float = Field(description="p(shared)")
    purchase: float = Field(description="p(bought through this video)")


class FeedItemOut(BaseModel):
    """One ranked video."""

    video_id: str
    creator_id: str | None
    product: ProductOut | None
    score: float = Field(description="Relevance used for the order (comparable within one page only).")
    reason: str = Field(description="Why this video is here, e.g. 'a creator you trust', 'you follow u12', "
                                    "'trending in books', 'new creator'.")
    source: str = Field(description="Candidate source: video, creator, product, following, trending, fresh, "
                                    "session, popular or new_creator.")
    sponsored: bool = Field(description="The merchant posted it about its own product (brand content).")
    earns_commission: bool = Field(description="A purchase through this video pays its creator a commission.")
    predicted: PredictedOut | None = Field(None, description="Null when the page was ranked without the ranker.")


class FeedOut(BaseModel):
    """A ranked page of a user's feed."""

    request_id: str = Field(description="Echo it back as `request_id` on events about these items.")
    user_id: str
    model_version: str
    cold_start: bool = Field(description="True when the model does not know the user (popularity feed).")
    ranking: str = Field(description="ranker, retrieval or popular: what ordered this page.")
    seed: int = Field(description="The request seed: the same user, seed and state give the same page.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page (never repeats this one); "
                                                "null at the end of the feed.")
    items: list[FeedItemOut]

    @classmethod
    def from_feed(cls, feed: Feed) -> FeedOut:
        """Response body from the core library's Feed."""
        return cls(request_id=feed.request_id, user_id=feed.user_id, model_version=feed.model_version,
                   cold_start=feed.cold_start, ranking=feed.ranking, seed=feed.seed, next_cursor=feed.next_cursor,
                   items=[_item(i) for i in feed.items])


def _item(item: FeedItem) -> FeedItemOut:
    """Response item from a core FeedItem."""
    product = None if item.product is None else ProductOut(**item.product._asdict())
    predicted = None if item.predicted is None else PredictedOut(**item.predicted)
    return FeedItemOut(video_id=item.video_id, creator_id=item.creator_id, product=product, score=item.score,
                       reason=item.reason, source=item.source, sponsored=item.sponsored,
                       earns_commission=item.earns_commission, predicted=predicted)


def feed_json(feed: Feed) -> bytes:
    """The JSON body of `FeedOut.from_feed(feed)`, built directly: validating ~60 nested models per response
    only to serialize them again cost more than the page assembly. Same keys in the same order and the same
    values (orjson writes non-finite floats as null, as pydantic does)."""
    body = {"request_id": feed.request_id, "user_id": feed.user_id, "model_version": feed.model_version,
            "cold_start": feed.cold_start, "ranking": feed.ranking, "seed": feed.seed,
            "next_cursor": feed.next_cursor, "items": [_item_body(i) for i in feed.items]}
    return orjson.dumps(body)


def _item_body(item: FeedItem) -> dict[str, object]:
    """One item of `feed_json`, in FeedItemOut's field order."""
    product, predicted = item.product, item.predicted
    return {"video_id": item.video_id, "creator_id": item.creator_id,
            "product": None if product is None else {"product_id": product.product_id, "price": product.price,
                                                     "commission_rate": product.commission_rate},
            "score": item.score, "reason": item.reason, "source": item.source, "sponsored": item.sponsored,
            # predicted as FeedService makes it: keyed watch, share, purchase
            "earns_commission": item.earns_commission, "predicted": predicted}


class Health(BaseModel):
    """Liveness."""

    status: str


class Ready(BaseModel):
    """Readiness, with what is being served."""

    status: str
    model_version: str
    bundle_id: str
    source: str
    n_users: int
    n_videos: int
    last_reload_check: datetime | None = None
    last_reload_error: str | None = Field(None, description="Why the last new version was refused, if it was.")


class ReloadOut(BaseModel):
    """Outcome of a reload request."""

    status: str = Field(description="unchanged, reloaded or refused")
    version: str = Field(description="The version serving now.")
    target: str = Field(description="The version the source pointed at.")
    error: str | None = None


def documented(*statuses: int) -> dict[int | str, dict[str, str]]:
    """OpenAPI `responses` for the error statuses a group of routes may answer."""
    return {status: {"description": ERROR_MEANINGS[status]} for status in statuses}


ERROR_MEANINGS = {
    400: "malformed request: bad JSON, or a damaged cursor",
    401: "missing, malformed, unknown or expired credentials",
    403: "valid credentials that may not do this (another creator's or merchant's data)",
    404: "no such id",
    413: "body too large",
    415: "not application/json",
    503: "not ready yet, or the event store is unavailable: retry after Retry-After",
}
