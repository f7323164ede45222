"""Talking to kmock, the Kubernetes API emulator the cluster tests run against."""

from __future__ import annotations

import asyncio


def api_client(kmock):
    """A kubernetes ApiClient pointed at the emulator."""
    from kubernetes import client

    return client.ApiClient(client.Configuration(host=str(kmock.url)))


def stored(kmock, plural: str, namespace: str, name: str, *, include_deleted: bool = True):
    """The object the emulator holds for (plural, namespace, name), or None (also when it is deleted
    and ``include_deleted`` is false)."""
    for (resource, obj_ns, obj_name), obj in kmock.objects.items():
        if resource.plural == plural and obj_ns == namespace and obj_name == name:
            if include_deleted or not obj.deleted:
                return obj
    return None


async def until(predicate, timeout_s: float = 20.0) -> None:
    """Wait (polling every 20 ms) until ``predicate()`` is true; fail the test after ``timeout_s``."""
    for _ in range(int(timeout_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")
