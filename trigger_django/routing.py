"""WebSocket routes. Install them behind the origin check and the session auth::

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": AllowedHostsOriginValidator(
        AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    ),
})
"""

from __future__ import annotations

from django.urls import path

from trigger_django.conf import get_config
from trigger_django.consumers import StreamConsumer

__all__ = ["websocket_urlpatterns"]

websocket_urlpatterns = [
    path(get_config().websocket_path, StreamConsumer.as_asgi(), name="trigger_django_ws"),
]
