"""Sockets end with their session: every subscribe re-reads the session, and logging out closes
the sockets opened with that session, in this process at once and in other processes through the
channel layer (a per-user group).

The app config imports this module so that the ``user_logged_out`` receiver is connected.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

__all__ = [
    "LOGOUT_EVENT",
    "register",
    "session_digest",
    "session_user_key",
    "unregister",
    "user_group",
]

logger = logging.getLogger(__name__)

#: The channel-layer message type a consumer handles as ``trigger_django_logout``.
LOGOUT_EVENT = "trigger_django.logout"

#: Sockets of this process by session digest: a callback that closes each.
_sockets: dict[str, dict[int, Callable[[], None]]] = {}


def session_digest(session_key: str) -> str:
    """A session key is a credential: only its digest travels (channel layers, registries)."""
    return hashlib.sha256(session_key.encode()).hexdigest()[:32]


def user_group(user_key: str) -> str:
    return "trigger_django.user." + hashlib.sha256(user_key.encode()).hexdigest()[:32]


def register(digest: str, token: int, close: Callable[[], None]) -> None:
    _sockets.setdefault(digest, {})[token] = close


def unregister(digest: str, token: int) -> None:
    sockets = _sockets.get(digest)
    if sockets is not None:
        sockets.pop(token, None)
        if not sockets:
            del _sockets[digest]


async def session_user_key(session_key: str | None) -> str | None:
    """The pk (as a string) of the user the session is logged in as now, or ``None`` when the
    session was deleted, expired, or logged out, or the user's password changed."""
    if not session_key:
        return None
    from channels.auth import get_user

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = await get_user({"session": store})
    if not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)


@receiver(user_logged_out, dispatch_uid="trigger_django.live.sessions.logout")
def close_sockets_on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    session_key = getattr(session, "session_key", None)
    if not session_key:
        return
    digest = session_digest(session_key)
    for close in list(_sockets.get(digest, {}).values()):
        close()
    if user is None:
        return
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import InMemoryChannelLayer, get_channel_layer

        layer = get_channel_layer()
        # The in-memory layer only reaches this process, which the registry above covers.
        if layer is None or isinstance(layer, InMemoryChannelLayer):
            return
        async_to_sync(layer.group_send)(
            user_group(str(user.pk)), {"type": LOGOUT_EVENT, "session": digest}
        )
    except Exception:
        logger.exception("trigger_django: could not tell other processes about a logout")
