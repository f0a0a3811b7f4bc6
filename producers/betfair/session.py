"""The live recorder's logic, pure: what to do with each raw stream message, and with a reconnect.

A `StreamSession` is one subscription (market or order stream) across reconnects. The socket
code (`producers.betfair.live`) hands it every raw line with the capture time and tells it when
the connection dropped; the session answers with the events to append. It never reads a
clock and never touches a socket, so it is tested offline on recorded payloads.

Continuity (Betfair's own protocol): every change message carries `clk` (and the first ones
`initialClk`); re-subscribing with both after a drop makes Betfair send the missed changes
(`ct=RESUB_DELTA`). If it cannot, it sends a fresh full image (`ct=SUB_IMAGE`, `img=true`):
the state is right again but the changes in between are lost. Each drop is recorded as a
`FeedGap` on `md.betfair.gap` once the outcome is known: `repaired=True` for a resubscribe
delta, `repaired=False` for a new image, or when the recorder stops while disconnected. A
message with a non-null `status` (e.g. 503: Betfair's stream is lagging) is recorded too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from producers.betfair.parse import CLOCK_TOPIC, GAP_TOPIC, RAW_TOPIC, StreamDecoder, pt_ns
from ticktape.errors import ValidationError
from ticktape.events import CustomData, DeadLetter, Event, FeedGap, MarketBook, MarketDefinition, StreamClock
from ticktape.tape import Encoded

VENUE = "betfair"
BAD_INPUT = (ValidationError, KeyError, TypeError, ValueError, IndexError, AttributeError)


@dataclass
class SessionOutput:
    """What one message produced: events per topic, dead letters, and whether to drop the connection."""

    events: list[tuple[str, Event | Encoded]] = field(default_factory=list)  # Encoded: an encode_books decoder
    dead_letters: list[DeadLetter] = field(default_factory=list)
    close: bool = False
    error: str | None = None


class StreamSession:
    """One Betfair stream subscription ("market" or "order") across reconnects.

    `origin` names it in dead letters (e.g. `betfair:market-stream`).
    """

    def __init__(self, stream: str, *, keep_raw: bool = False, decoder: StreamDecoder | None = None,
                 checkpoints: bool = False) -> None:
        self.stream = stream
        self.keep_raw = keep_raw
        # With `checkpoints`, each message with a clk ends its events with a `StreamClock` on CLOCK_TOPIC:
        # a mark for the recorder, which appends it (end offsets filled in) once the events before it are.
        self.checkpoints = checkpoints
        # Closed markets are kept 8 h of stream time after their last change, then dropped when a new
        # market arrives (flat memory over days of recording), as betfairlightweight's live stream does.
        self.decoder = decoder or StreamDecoder()
        self.origin = f"{VENUE}:{stream}-stream"
        self.initial_clk: str | None = None
        self.clk: str | None = None
        self.connection_id: str | None = None
        self.connected = False
        self.messages = 0
        self.last_pt: int | None = None
        self._dropped_at: int | None = None  # ts_recv of the drop, while a gap is unresolved
        self._drop_reason = ""
        self._status: int | None = None
        # Per topic: decoded events a resumed stream will send again that are on the tape already
        # (their raw payload was not: a kill between the two appends), not to be emitted twice.
        self.already_recorded: dict[str, int] = {}
        self.replayed: dict[str, int] = {}  # per topic: events `restore` rebuilt (those on the tape before)
        # Per market: events on the tape after the last checkpoint (a kill before it was appended), in
        # order; the resumed stream resends them, and each resent event equal to the next one is dropped.
        self.unconfirmed: dict[str, deque[MarketBook | MarketDefinition]] = {}

    # --- the socket's events -------------------------------------------------------------------

    def on_connected(self) -> None:
        """The socket is up (authenticated, subscription about to be sent)."""
        self.connected = True

    def on_disconnected(self, ts_recv: int, reason: str) -> None:
        """The connection dropped; the gap is recorded once the resubscription shows its outcome."""
        self.connected = False
        if self._dropped_at is None:
            self._dropped_at = ts_recv
            self._drop_reason = reason

    def restore(self, raw_lines: Iterable[bytes | str], ts_recv: int) -> int:
        """Rebuild the state a previous recorder had from its raw payloads (`raw.betfair`, in order).

        Each line goes through `on_message` again and its events are dropped (they are on the tape
        already): the decoder's market and order caches and the clocks come back as they were, so a
        restarted recorder resubscribes with `initialClk`/`clk` and Betfair's resent deltas fold into
        the right books. The restart is then treated as a drop at `ts_recv`: the resubscription's
        answer is recorded as a `FeedGap` (repaired by a resub delta, not by a new image).
        Returns how many lines were replayed (0: nothing to resume, a fresh subscription).
        """
        n = 0
        for raw in raw_lines:
            for topic, _ in self.on_message(raw, ts_recv).events:
                if topic != RAW_TOPIC:
                    self.replayed[topic] = self.replayed.get(topic, 0) + 1
            n += 1
        self.messages = 0  # dead letters of this run count its own messages
        if n and self.clk:
            self.on_disconnected(ts_recv, "recorder restarted")
        return n

    def resume(self, checkpoint: StreamClock, unconfirmed: Mapping[str, Sequence[MarketBook | MarketDefinition]],
               ts_recv: int) -> None:
        """Resume after a previous recorder's last `checkpoint` (its decoder's caches already rebuilt from
        the events it covers): subscribe with its clocks, and do not emit again the `unconfirmed` events
        (per market, the stream's events on the tape after the checkpoint's offsets, in order) that
        Betfair resends: a resent event equal to the next unconfirmed one of its market (capture time
        aside) is dropped; the first that differs ends the matching for that market (Betfair conflated
        the resent changes differently: from then on everything is emitted, nothing lost).
        The restart is then treated as a drop at `ts_recv`, recorded as a `FeedGap` once Betfair answers.
        """
        self.initial_clk, self.clk = checkpoint.initial_clk, checkpoint.clk
        self.connection_id = checkpoint.connection_id
        self.last_pt = checkpoint.ts_event
        self.unconfirmed = {m: deque(events) for m, events in unconfirmed.items() if events}
        self.on_disconnected(ts_recv, "recorder restarted")

    def restarted(self, ts_recv: int, why: str,
                  unconfirmed: Mapping[str, Sequence[MarketBook | MarketDefinition]] | None = None) -> None:
        """A restart that cannot resume (`why`): the fresh subscription's image is recorded as an unrepaired
        gap; its events equal to the `unconfirmed` ones on the tape (see `resume`) are not emitted again."""
        self.unconfirmed = {m: deque(events) for m, events in (unconfirmed or {}).items() if events}
        self.on_disconnected(ts_recv, f"recorder restarted ({why})")

    def resubscribe_clocks(self) -> tuple[str | None, str | None]:
        """(initialClk, clk) to subscribe with: both set after the first data, so nothing is missed."""
        if self.initial_clk and self.clk:
            return self.initial_clk, self.clk
        return None, None

    def close(self, ts_recv: int) -> list[tuple[str, Event]]:
        """The recorder stops: an unresolved drop becomes an unrepaired gap."""
        if self._dropped_at is None:
            return []
        return [self._gap(ts_recv, f"{self._drop_reason}; recorder stopped before the stream resumed", False)]

    # --- messages ------------------------------------------------------------------------------

    def on_message(self, raw: bytes | str, ts_recv: int) -> SessionOutput:
        """Everything one raw stream line means, stamped with its capture time `ts_recv` (ns)."""
        out = SessionOutput()
        self.messages += 1
        raw_bytes = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        if self.keep_raw:
            out.events.append((RAW_TOPIC, CustomData("betfair.raw", self.stream, ts_recv, ts_recv,
                                                     raw_bytes.decode("utf-8", "replace"), "application/json")))
        try:
            data = orjson.loads(raw_bytes)
            if not isinstance(data, dict):
                raise ValidationError(f"expected a JSON object, got {type(data).__name__}")
            self._control(data, ts_recv, out)
            if data.get("op") in ("mcm", "ocm", "rcm", "ccm"):
                events = self.decoder.decode(data, ts_recv)
                if self.already_recorded:
                    events = self._not_recorded(events)
                if self.unconfirmed:
                    events = self._not_confirmed(events)
                out.events.extend(events)
            if self.checkpoints and data.get("clk"):
                out.events.append((CLOCK_TOPIC, self.clock_mark(ts_recv)))
        except (orjson.JSONDecodeError, *BAD_INPUT) as exc:
            out.dead_letters.append(DeadLetter(self.origin, f"message {self.messages}", f"{type(exc).__name__}: {exc}",
                                               ts_recv, ts_recv, raw_bytes))
        return out

    def _not_recorded(self, events: list[tuple[str, Event | Encoded]]) -> list[tuple[str, Event | Encoded]]:
        """`events` without the leading ones per topic that `already_recorded` says are on the tape."""
        kept = []
        for topic, event in events:
            if self.already_recorded.get(topic, 0) > 0:
                self.already_recorded[topic] -= 1
            else:
                kept.append((topic, event))
        self.already_recorded = {t: n for t, n in self.already_recorded.items() if n > 0}
        return kept

    def clock_mark(self, ts_recv: int) -> StreamClock:
        """The session's clocks now, as a checkpoint without its subscription and offsets (the recorder's)."""
        ts = self.last_pt if self.last_pt is not None else ts_recv
        return StreamClock(venue=VENUE, stream=self.stream, ts_event=ts, ts_recv=ts_recv,
                           connection_id=self.connection_id, initial_clk=self.initial_clk, clk=self.clk,
                           subscription="", topic="", end_offsets=())

    def _not_confirmed(self, events: list[tuple[str, Event | Encoded]]) -> list[tuple[str, Event | Encoded]]:
        """`events` without those already on the tape after the last checkpoint (see `resume`)."""
        kept = []
        for topic, event in events:
            if isinstance(event, MarketBook | MarketDefinition) and event.market_id in self.unconfirmed:
                pending = self.unconfirmed[event.market_id]
                if event._replace(ts_recv=0) == pending[0]._replace(ts_recv=0):
                    pending.popleft()
                    if not pending:
                        del self.unconfirmed[event.market_id]
                    continue
                del self.unconfirmed[event.market_id]  # resent otherwise: keep everything from here
            kept.append((topic, event))
        return kept

    def _control(self, data: dict[str, Any], ts_recv: int, out: SessionOutput) -> None:
        op = data.get("op")
        if op == "connection":
            self.connection_id = data.get("connectionId")
            return
        if op == "status":
            if data.get("statusCode") == "FAILURE":
                out.error = f"{data.get('errorCode')}: {data.get('errorMessage')}"
                out.close = bool(data.get("connectionClosed"))
            return
        if op not in ("mcm", "ocm", "rcm", "ccm"):
            return
        # Sequence tokens: keep the latest, exactly as betfairlightweight's stream does.
        if data.get("initialClk"):
            self.initial_clk = data["initialClk"]
        if data.get("clk"):
            self.clk = data["clk"]
        pt = data.get("pt")
        if isinstance(pt, int) and not isinstance(pt, bool):
            self.last_pt = pt_ns(pt)  # the decoder's reading (race streams may send seconds)
        status = data.get("status")
        if status != self._status:
            if status is not None:
                out.events.append(self._gap(ts_recv, f"Betfair stream status {status}: updates may be delayed or "
                                            "missing until it clears", False))
            self._status = status
        ct = data.get("ct")
        if self._dropped_at is not None and ct in ("RESUB_DELTA", "SUB_IMAGE", "UPDATE"):
            if ct == "RESUB_DELTA":
                out.events.append(self._gap(ts_recv, f"{self._drop_reason}; resubscribed from clk, Betfair resent "
                                            "the missed changes", True))
            else:
                out.events.append(self._gap(ts_recv, f"{self._drop_reason}; Betfair sent a new full image: changes "
                                            "between the drop and the image were not received", False))
            self._dropped_at = None

    def _gap(self, ts_recv: int, reason: str, repaired: bool) -> tuple[str, Event]:
        ts = self.last_pt if self.last_pt is not None else ts_recv
        return GAP_TOPIC, FeedGap(VENUE, "*", ts, ts_recv, self.stream, reason, None, None, repaired)
