"""The serving heap: loaded models are exempt from full collections, the previous model's garbage is collected on
a swap, nothing stays frozen after the app stops, and a catalog refresh frees the old service without the
collector."""

from __future__ import annotations

import gc
import shutil
import weakref

from fastapi.testclient import TestClient

from feed.bundle import load_bundle, write_bundle
from feed.service import FeedService
from serving.app import create_app
from serving.heap import release, settle
from serving.settings import ServingSettings


class Node:
    """An object in a reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


def cyclic_garbage() -> weakref.ref:
    """A weak reference to a cycle nobody holds any more."""
    node = Node()
    ref = weakref.ref(node)
    del node
    return ref


def is_frozen(obj: object) -> bool:
    """True when the collector no longer walks `obj` (the permanent generation is not in `gc.get_objects`)."""
    return all(o is not obj for o in gc.get_objects())


def test_settle_collects_garbage_and_freezes_what_lives():
    alive = Node()
    garbage = cyclic_garbage()
    try:
        settle()
        assert garbage() is None
        assert gc.get_freeze_count() > 0 and is_frozen(alive)
        later = cyclic_garbage()  # made after the freeze: the collector still frees it
        gc.collect()
        assert later() is None
    finally:
        release()
    assert gc.get_freeze_count() == 0 and not is_frozen(alive)


def test_settle_frees_what_an_earlier_settle_froze():
    node = Node()
    ref = weakref.ref(node)
    try:
        settle()
        del node  # garbage now, but frozen: no collection can free it…
        gc.collect()
        assert ref() is not None
        settle()  # …until the next load settles the heap
        assert ref() is None
    finally:
        release()


def test_the_app_settles_on_start_and_on_reload_and_releases_on_stop(small_bundle_dir, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(small_bundle_dir, folder)
    settings = ServingSettings(bundle=folder, reload_interval_s=0, admin_token="t", store_url="")
    with TestClient(create_app(settings)) as client:
        assert gc.get_freeze_count() > 0
        model = client.app.state.holder.current
        assert is_frozen(model.service)
        left_behind = weakref.ref(model)
        model.service.left_behind = Node()  # a cycle hanging off the old model: the collector's job on a swap
        cycle = weakref.ref(model.service.left_behind)
        del model
        bundle = load_bundle(folder)
        bundle.popularity = bundle.popularity + 1  # new content: a new version to reload
        write_bundle(bundle, folder, bundle.manifest)
        body = client.post("/v1/admin/reload", headers={"Authorization": "Bearer t"}).json()
        assert body["status"] == "reloaded"
        assert left_behind() is None and cycle() is None
        assert is_frozen(client.app.state.holder.current.service)
        assert client.get("/v1/users/nobody/feed").status_code == 200
    assert gc.get_freeze_count() == 0


def test_a_catalog_refresh_frees_the_old_service_by_reference_counting(small_bundle_dir):
    bundle = load_bundle(small_bundle_dir)
    service = FeedService(bundle)
    service.feed(str(bundle.users.ids[0]), 20, seed=1)
    service.feed("nobody", 20, seed=1)
    gc.collect()
    gc.disable()
    try:
        old = weakref.ref(service)
        parts = [weakref.ref(service.sources), weakref.ref(service.tables)]
        service = service.with_catalog(bundle.catalog)
        assert old() is None and all(part() is None for part in parts)
    finally:
        gc.enable()
