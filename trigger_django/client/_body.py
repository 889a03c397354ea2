"""A streamed response's body, read so that no cancellation can strand its connection.

httpcore (1.0.x) cleans up after a cancelled body read by closing the response, and that clean-up
suspends (it takes an anyio lock, which always checkpoints). A second cancellation delivered there
interrupts it half-way: the response counts as closed, but the connection stays ``ACTIVE`` in the
pool for good, never reused, closed or freed (the body-read relative of encode/httpcore#1093). The
task that iterates a stream is easily cancelled twice in a row (a deadline expires, then its owner
stops it), so it never reads the socket itself: a task of the body's own (the *pump*) does, and
only :meth:`ResponseBody.aclose` cancels it, once.
"""

from __future__ import annotations

import asyncio

import httpx

__all__ = ["ResponseBody"]

#: What the pump hands over: a chunk, the end (``None``), or the exception that ended the read.
_Slot = bytes | BaseException | None


class ResponseBody:
    """The body of ``response`` (sent with ``stream=True``), chunk by chunk.

    The pump starts at the first :meth:`next_chunk` and reads at most one chunk ahead, so a
    consumer that stops reading still pushes back on the server through TCP. Cancelling a
    caller of :meth:`next_chunk` (any number of times) leaves the read alone; :meth:`aclose`
    stops it and closes the response."""

    __slots__ = ("_pump", "_slots", "response")

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._slots: asyncio.Queue[_Slot] = asyncio.Queue(1)
        self._pump: asyncio.Task[None] | None = None

    async def next_chunk(self) -> bytes | None:
        """The next chunk, or ``None`` at the end of the body. Raises what ended the read
        (``httpx.RequestError`` for network errors and broken encodings). A caller that gives
        up waiting (``asyncio.timeout``) loses nothing: the chunk stays for the next call."""
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(
                self._read(), name="trigger_django:body"
            )
        slot = await self._slots.get()
        if isinstance(slot, BaseException):
            self._slots.put_nowait(slot)  # the read is over: every later call raises it too
            raise slot
        if slot is None:
            self._slots.put_nowait(None)
        return slot

    async def _read(self) -> None:
        chunks = self.response.aiter_bytes()
        try:
            async for chunk in chunks:
                if chunk:
                    await self._slots.put(chunk)
            await self._slots.put(None)
        except Exception as exc:
            await self._slots.put(exc)
        finally:
            # Cancelled while handing a chunk over, the read is suspended between chunks: close
            # it here, in the one task that reads it (a cancellation during a socket read has
            # already ended it, through httpcore's clean-up).
            await chunks.aclose()  # type: ignore[attr-defined]
            await self.response.aclose()

    async def aclose(self) -> None:
        """Stop the read and close the response: the connection goes back to the pool when the
        body was read to its end, and is closed otherwise. Run it where nothing cancels it
        (the client shields it)."""
        pump = self._pump
        if pump is not None:
            if not pump.done():
                pump.cancel()
            await asyncio.wait((pump,))
        await self.response.aclose()
