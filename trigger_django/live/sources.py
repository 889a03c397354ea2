"""Feed sources: a run's output stream read from Trigger.dev, and the tokens it reads with.

Upstream tokens are minted per run and process (``read:runs:<run_id>``, signed locally) and shared
by every read of that run: a shared reader never depends on a token one viewer carried.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Hashable

from trigger_django.client import StreamPart
from trigger_django.live.hub import Item
from trigger_django.live.protocol import cursor_key, encode_part, is_cursor, upstream_error
from trigger_django.streams import ChunkCheck
from trigger_django.upstream import get_client, mint_public_token

__all__ = ["STALL_MARGIN", "TOKEN_REFRESH_MARGIN", "OutputStream", "minted_tokens", "token_for"]

#: Seconds of upstream silence beyond the idle timeout after which a connection counts as dead.
STALL_MARGIN = 30
#: A minted token is replaced when it has less than this left, in seconds.
TOKEN_REFRESH_MARGIN = 60
#: Tokens minted in this process, by run id: ``(token, expires_at)``.
minted_tokens: dict[str, tuple[str, int]] = {}
_MAX_CACHED_TOKENS = 4096


async def token_for(run_id: str, *, fresh: bool = False) -> str:
    """A token that can read exactly ``run_id``: the one minted for it, or a new one."""
    now = time.time()
    minted = minted_tokens.get(run_id)
    if minted is None or fresh or minted[1] - now <= TOKEN_REFRESH_MARGIN:
        minted = await mint_public_token([f"read:runs:{run_id}"])
        if len(minted_tokens) >= _MAX_CACHED_TOKENS:
            for stale in [r for r, (_, exp) in minted_tokens.items() if exp - now <= 60]:
                del minted_tokens[stale]
            if len(minted_tokens) >= _MAX_CACHED_TOKENS:
                minted_tokens.clear()
        minted_tokens[run_id] = minted
    return minted[0]


class OutputStream:
    """A run's output stream as a feed source (``hub.Source``)."""

    __slots__ = ("_key", "run_id", "start_index", "stream_key")

    def __init__(self, run_id: str, stream_key: str, start_index: int | None = None) -> None:
        self.run_id = run_id
        self.stream_key = stream_key
        self.start_index = start_index or None
        key: tuple[Hashable, ...] = ("stream", run_id, stream_key)
        # Skipping the first N parts is a different view of the stream: its own feed.
        self._key = key if self.start_index is None else (*key, "start", self.start_index)

    @property
    def key(self) -> tuple[Hashable, ...]:
        return self._key

    def describe_error(self, exc: BaseException) -> tuple[int, str]:
        return upstream_error(exc, self.run_id, self.stream_key)

    async def open(self, resume: str | None, idle_timeout: int) -> AsyncIterator[Item]:
        run_id = self.run_id
        token = await token_for(run_id)

        async def refresh_token() -> str:
            return await token_for(run_id, fresh=True)

        stream: AsyncIterator[StreamPart] = get_client(
            access_token=token, run_id=run_id
        ).read_stream(
            run_id,
            self.stream_key,
            last_event_id=resume,
            start_index=None if resume else self.start_index,
            timeout_seconds=idle_timeout,
            # The server ends a stream idle for `timeout`; silence well beyond that means the
            # connection died without a FIN, so reconnect (resuming from the cursor).
            stall_timeout=idle_timeout + STALL_MARGIN,
            refresh_token=refresh_token,
        )
        # A defined stream's type is checked; a misfit is logged once and sent all the same.
        check = ChunkCheck.for_key(self.stream_key, run_id)
        previous_id: str | None = None
        entry_before = resume
        occurrence = 0
        last: tuple[int, ...] = (0,)
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for part in stream:
                check(part.chunk)
                part_id = part.id
                v1 = "-" in part_id
                # A v1 entry holding several lines yields several parts with one id: number
                # them, so positions (and the page) order and de-duplicate by (id, i). On v2
                # an id names one record: a repeated id is a re-sent record, not a new part.
                if v1 and part_id == previous_id:
                    occurrence += 1
                else:
                    if v1 and previous_id is not None:
                        entry_before = previous_id
                    occurrence = 0
                previous_id = part_id
                if is_cursor(part_id):
                    position = (*cursor_key(part_id), occurrence)
                else:  # no usable id: keep the order of arrival
                    position = (*last[:-1], last[-1] + 1)
                last = position
                data = encode_part(part_id, part.chunk, part.timestamp, occurrence)
                yield Item(position, part_id, data, len(data), entry_before if v1 else part_id)
