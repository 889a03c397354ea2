"""The routing table: every Trigger.dev route the emulator serves, and ``/_emulator/``.

Order matters where patterns overlap: the first pattern matching the path decides (see
:mod:`trigger_django.emulator.routing`), so ``…/input/{stream}`` comes before
``…/{target}/{key}``.
"""

from __future__ import annotations

from trigger_django.emulator.handlers import (
    control,
    input_streams,
    run_metadata,
    run_shapes,
    stream_reads,
    stream_writes,
    tokens,
    triggering,
)
from trigger_django.emulator.routing import Router, route

ROUTES = (
    route("/api/v1/tasks/{task}/trigger", POST=triggering.trigger),
    route("/api/v1/auth/jwt/claims", POST=tokens.jwt_claims),
    route("/api/v1/auth/jwt", POST=tokens.mint_jwt),
    route("/api/v1/auth/public-tokens", POST=tokens.public_token),
    route("/api/v1/runs/{run}/metadata", PUT=run_metadata.update_metadata),
    route("/realtime/v1/runs/{run}", GET=run_shapes.run_shape),
    route(
        "/realtime/v1/streams/{run}/input/{stream}",
        GET=stream_reads.read_input,
        HEAD=stream_reads.read_input,
        POST=input_streams.send_input,
    ),
    route(
        "/realtime/v1/streams/{run}/{key}",
        GET=stream_reads.read_output,
        HEAD=stream_reads.read_output,
    ),
    # PUT (initialise), POST (chunked ingest), HEAD (resume query); other methods get the
    # server's 405.
    route("/realtime/v1/streams/{run}/{target}/{key}", ANY=stream_writes.write_stream),
    route("/realtime/v1/streams/{run}/{target}/{key}/append", POST=stream_writes.append),
    route(
        "/_emulator/requests",
        GET=control.list_requests,
        DELETE=control.clear_requests,
    ),
    route("/_emulator/faults", POST=control.inject_fault),
    route("/_emulator/runs/{run}", GET=control.show_run),
    route("/_emulator/runs/{run}/update", POST=control.update_run),
    route("/_emulator/runs/{run}/fail", POST=control.fail_run),
    route("/_emulator/runs/{run}/complete", POST=control.complete_run),
)

ROUTER = Router(ROUTES)
