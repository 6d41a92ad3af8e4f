"""The streaming adversarial suite: hostile events, partition keys, headers and topics."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from datalayer import DataLayer
from datalayer.categories.streaming import Stream
from datalayer.testing.contracts.adversarial.base import AdversarialContract, IdentifierCase
from datalayer.testing.contracts.adversarial.corpus import hostile_text, hostile_values
from datalayer.testing.contracts.adversarial.outcomes import Outcome, Tally, same, shown
from datalayer.testing.contracts.adversarial.reference import Refuse, json_form, utf8_ok
from datalayer.testing.contracts.base import OpenLayer
from datalayer.testing.contracts.schemas import Event

PATTERNS: dict[str, Any] = {
    "events": {
        "topic": "events",
        "partitions": 2,
        "key": "device",
        "schema": "datalayer.testing.contracts.schemas:Event",
    },
    "free": {"topic": "free", "partitions": 1},
    "other": {"topic": "other", "partitions": 1},
}
#: A message bigger than this may be past a store's size limit: refused, or kept.
FITS = 30_000


@dataclass
class Published:
    """What an accepted publish must read back as."""

    label: str
    value: Any
    key: str | None
    headers: dict[str, str]


def fits(value: Any) -> bool:
    return len(json.dumps(value, ensure_ascii=False).encode(errors="surrogatepass")) < FITS


class StreamingAdversarial(AdversarialContract):
    """Every accepted message reads back exactly once, with its value (as JSON), key and
    headers, on its own topic; what the contract refuses is ``PayloadValidationError`` before
    anything is sent. ``idle`` is how long the final read waits for more."""

    category = "streaming"
    idle = 1.0

    def idle_for(self, store: dict[str, Any]) -> float:
        return self.idle

    @pytest.fixture
    def dl(self, open_layer: OpenLayer, datalayer_store: dict[str, Any]) -> DataLayer:
        self.idle = self.idle_for(datalayer_store)
        dl = open_layer(PATTERNS)
        dl.stream("other").publish({"sentinel": True})
        return dl

    def finish(self, tally: Tally, dl: DataLayer, marker: str) -> None:
        other = dl.stream("other")
        values = [m.value for m in other.consume(None, start="earliest", idle_timeout=self.idle)]
        if values != [{"sentinel": True}]:
            tally.violation(f"another pattern's topic changed: {shown(values)}")
        topics = {dl.stream(p).pattern.topic for p in PATTERNS}
        self.check_nothing_foreign(tally, dl, marker, lambda name: name in topics)
        tally.finish()

    @staticmethod
    def try_publish(
        tally: Tally,
        stream: Stream,
        label: str,
        act: Callable[[Stream], Any],
        expected: Published | None,
        outcome: Outcome,
        sent: dict[tuple[int, int], Published],
    ) -> None:
        """One publish: accepted, its place is recorded to read back; refused, the topic did
        not grow."""
        before = stream.end_offsets()

        def check(delivery: Any) -> None:
            assert expected is not None, "accepted, with nothing expected"
            assert delivery.topic == stream.pattern.topic, f"published to {delivery.topic}"
            sent[(delivery.partition, delivery.offset)] = expected

        def unchanged() -> None:
            assert stream.end_offsets() == before, "the topic grew"

        tally.attempt(label, lambda: act(stream), check=check, unchanged=unchanged, outcome=outcome)

    def read_back(
        self, tally: Tally, stream: Stream, sent: dict[tuple[int, int], Published]
    ) -> None:
        """Every accepted message and nothing else, with its value, key and headers."""
        seen: set[tuple[int, int]] = set()
        for message in stream.consume(None, start="earliest", idle_timeout=self.idle):
            place = (message.partition, message.offset)
            seen.add(place)
            published = sent.get(place)
            if published is None:
                tally.violation(f"{stream.pattern.name}: a message nobody published at {place}")
                continue
            for what, found, wanted in (
                ("value", message.value, published.value),
                ("key", message.key, published.key),
                ("headers", dict(message.headers), published.headers),
            ):
                if not same(found, wanted):
                    tally.violation(
                        f"{published.label}: {what} read back {shown(found)}, not {shown(wanted)}"
                    )
        lost = [sent[p].label for p in sorted(set(sent) - seen)]
        if lost:
            tally.violation(f"{stream.pattern.name}: accepted but never read: {lost[:10]}")

    def test_payloads(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile values in every field of a schema'd event and in a free-form one, alone
        and in a batch: read back exactly (as JSON), or refused before anything is sent."""
        events, free = dl.stream("events"), dl.stream("free")
        sent_events: dict[tuple[int, int], Published] = {}
        sent_free: dict[tuple[int, int], Published] = {}
        for i, (label, value) in enumerate([*hostile_text(marker), *hostile_values()]):
            for name in ("event_id", "device", "seq", "payload"):
                event = {"event_id": f"e{i}", "device": "d", "seq": i, "payload": "", name: value}
                try:
                    body = json_form(Event.model_validate(event).model_dump(mode="json"))
                    expected: Published | None = Published(
                        f"{name} {label}", body, body["device"], {}
                    )
                    outcome: Outcome = "round trip" if fits(body) else "either"
                except (ValidationError, Refuse):
                    expected, outcome = None, "refused"
                self.try_publish(
                    tally,
                    events,
                    f"{name} {label}",
                    self.one(event),
                    expected,
                    outcome,
                    sent_events,
                )
            try:
                body = json_form({"v": value})
                expected = Published(f"free {label}", body, None, {})
                outcome = "round trip" if fits(body) else "either"
            except Refuse:
                expected, outcome = None, "refused"
            self.try_publish(
                tally, free, f"free {label}", self.one({"v": value}), expected, outcome, sent_free
            )
            batched = (
                None
                if expected is None
                else Published(f"free batch {label}", expected.value, None, {})
            )
            self.try_publish(
                tally,
                free,
                f"free batch {label}",
                self.last_of([{"v": 1}, {"v": value}]),
                batched,
                "refused" if outcome == "refused" else "either",
                sent_free,
            )
        for label, batch in [
            ("none", None),
            ("text", "abc"),
            ("int", 5),
            ("dict", {"a": 1}),
            ("bytes", b"{}"),
        ]:
            self.try_publish(
                tally,
                events,
                f"publish_many {label}",
                self.many(batch),
                None,
                "refused",
                sent_events,
            )
            if not isinstance(batch, dict):
                self.try_publish(
                    tally, free, f"publish {label}", self.one(batch), None, "refused", sent_free
                )
        for (partition, offset), published in list(sent_free.items()):
            if published.label.startswith("free batch"):  # the batch's first event
                sent_free[(partition, offset - 1)] = Published("batch head", {"v": 1}, None, {})
        self.read_back(tally, events, sent_events)
        self.read_back(tally, free, sent_free)
        self.finish(tally, dl, marker)

    @staticmethod
    def one(event: Any, key: Any = None, headers: Any = None) -> Callable[[Stream], Any]:
        return lambda stream: stream.publish(event, key=key, headers=headers)

    @staticmethod
    def many(events: Any) -> Callable[[Stream], Any]:
        return lambda stream: stream.publish_many(events)

    @staticmethod
    def last_of(events: list[Any]) -> Callable[[Stream], Any]:
        return lambda stream: stream.publish_many(events)[-1]

    def test_keys_and_headers(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile partition keys and headers: text names and values read back exactly (NUL
        and all); anything else, text no UTF-8 holds and header names with NUL are refused
        before anything is sent."""
        events = dl.stream("events")
        sent: dict[tuple[int, int], Published] = {}
        event = {"event_id": "e", "device": "d", "seq": 1, "payload": ""}
        body = Event.model_validate(event).model_dump(mode="json")
        for label, text in hostile_text(marker):
            ok: Outcome = "refused"
            if utf8_ok(text):
                ok = "round trip" if len(text) < FITS else "either"
            self.try_publish(
                tally,
                events,
                f"key {label}",
                self.one(event, key=text),
                Published(label, body, text, {}),
                ok,
                sent,
            )
            self.try_publish(
                tally,
                events,
                f"header value {label}",
                self.one(event, headers={"h": text}),
                Published(label, body, "d", {"h": text}),
                ok,
                sent,
            )
            name_ok: Outcome = ok if "\x00" not in text else "refused"
            self.try_publish(
                tally,
                events,
                f"header name {label}",
                self.one(event, headers={text: "v"}),
                Published(label, body, "d", {text: "v"}),
                name_ok,
                sent,
            )
        strange: list[tuple[str, Any, Any]] = [
            ("key int", 5, None),
            ("key bytes", b"k", None),
            ("key bool", True, None),
            ("key tuple", ("a",), None),
            ("key float", 1.5, None),
            ("header value int", None, {"h": 5}),
            ("header value bytes", None, {"h": b"v"}),
            ("header value none", None, {"h": None}),
            ("header value list", None, {"h": ["v"]}),
            ("header name int", None, {5: "v"}),
            ("header name bytes", None, {b"h": "v"}),
            ("header name none", None, {None: "v"}),
            ("headers text", None, "abc"),
            ("headers list", None, [("h", "v")]),
            ("headers int", None, 5),
        ]
        for label, key, headers in strange:
            self.try_publish(
                tally,
                events,
                label,
                self.one(event, key=key, headers=headers),
                None,
                "refused",
                sent,
            )
        self.read_back(tally, events, sent)
        self.finish(tally, dl, marker)

    # -- identifiers -------------------------------------------------------------------------

    def identifier_cases(self, marker: str) -> list[IdentifierCase]:
        topics: list[tuple[str, Any, Outcome]] = [
            ("topic-internal", "__consumer_offsets", "refused"),
            ("topic-underscore", f"_{marker}", "refused"),
            ("topic-dot", ".", "refused"),
            ("topic-dots", "..", "refused"),
            ("topic-slash", f"a/{marker}", "refused"),
            ("topic-space", f"{marker} x", "refused"),
            ("topic-accent", f"{marker}\u00e9", "refused"),
            ("topic-250", marker + "t" * 250, "refused"),
            ("topic-empty", "", "refused"),
            ("topic-newline", f"{marker}\n", "refused"),
            ("topic-int", 7, "refused"),
            ("topic-plain", f"t.{marker}-x_y", "round trip"),
        ]
        cases: list[IdentifierCase] = [
            (label, f"t{i}{marker}", {"topic": topic}, out)
            for i, (label, topic, out) in enumerate(topics)
        ]
        settings: list[tuple[str, dict[str, Any]]] = [
            ("partitions-zero", {"partitions": 0}),
            ("partitions-negative", {"partitions": -1}),
            ("partitions-huge", {"partitions": 10**9}),
            ("partitions-bool", {"partitions": True}),
            ("partitions-text", {"partitions": "two"}),
            ("partitions-float", {"partitions": 2.5}),
            ("key-injection", {"key": "a;b"}),
            ("key-dollar", {"key": "$x"}),
            ("key-newline", {"key": "k\n"}),
            ("dead-letter-internal", {"dead_letter": "__dlq"}),
            ("attempts-zero", {"max_attempts": 0}),
            ("attempts-bool", {"max_attempts": True}),
            ("retention-text", {"retention": "forever"}),
            ("replication-huge", {"replication_factor": 10**6}),
        ]
        cases += [
            (label, f"s{i}{marker}", {"topic": f"s{i}{marker}", **setting}, "refused")
            for i, (label, setting) in enumerate(settings)
        ]
        same_topic = f"d{marker}"
        cases.append(
            (
                "dead-letter-same",
                f"d{marker}",
                {"topic": same_topic, "dead_letter": same_topic},
                "refused",
            )
        )
        return cases + self.pattern_names(marker, lambda topic: {"topic": topic})

    def identifier_probe(self, dl: DataLayer, name: str, spec: dict[str, Any]) -> None:
        stream = dl.stream(name)
        delivery = stream.publish({"v": name})
        assert delivery.topic == spec["topic"]
        assert stream.end_offsets()[delivery.partition] == delivery.offset + 1

    def identifier_target(self, name: str, spec: dict[str, Any]) -> str:
        return str(spec["topic"])

    def owns(self, name: str, targets: set[str]) -> bool:
        return name in targets
