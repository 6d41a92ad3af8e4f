"""Adversarial suites: hostile input through every surface of every category, on any store.

Each suite throws a hostile corpus (``corpus``: SQL and operator injection, quotes and
backslashes, NUL and control characters, lone surrogates, Unicode normalisation pairs,
direction and zero-width marks, emoji, 1 MiB strings, JSON-looking text, ``__proto__``, deep
nesting, numbers past every range, NaN and infinities, bools where numbers go, bytes, naive,
aware, far-past and far-future datetimes) at every surface of its category: values, keys,
field names, filter operators and values, sorts, limits, TTLs, headers, and the identifiers a
registry declares. Every attempt must end one of two ways:

- a **round trip**: what was written reads back equal (in the category's documented stored
  form, ``reference``), under its own key only; or
- **refused**: a ``DataLayerError`` subclass, with nothing written.

Never a raw Python or driver exception, a partial write, another pattern's data, or a table,
collection, topic or key outside the pattern: each test ends by checking a sentinel pattern
and scanning the store for the test's marker, which every injection payload carries. Error
messages must carry no SQL, stay short and be printable.

Each test counts its attempts and outcomes (``outcomes.Tally``) and records them with pytest's
``record_property`` (``category``, ``store``, ``surface``, ``attempts``, ``refused``,
``round_trips``, ``violations``, ``errors``), so ``pytest --junitxml`` holds the figures; a
test that tried nothing, refused nothing or kept nothing fails.

A store type runs them as it runs the contract suites, with the fixture ``datalayer_store``
(see ``datalayer.testing.contracts``); a third-party type also overrides the hooks that look
at the store beside the contract: ``store_objects`` (and ``KeyValueAdversarial.kv_keys``).
``StreamingAdversarial.idle_for`` may give a store more time to deliver.
"""

from __future__ import annotations

from datalayer.testing.contracts.adversarial.base import AdversarialContract
from datalayer.testing.contracts.adversarial.corpus import hostile_text, hostile_values
from datalayer.testing.contracts.adversarial.documents import DocumentAdversarial
from datalayer.testing.contracts.adversarial.kv import KeyValueAdversarial
from datalayer.testing.contracts.adversarial.outcomes import Tally
from datalayer.testing.contracts.adversarial.streaming import StreamingAdversarial
from datalayer.testing.contracts.adversarial.transactional import TransactionalAdversarial

__all__ = [
    "AdversarialContract",
    "DocumentAdversarial",
    "KeyValueAdversarial",
    "StreamingAdversarial",
    "Tally",
    "TransactionalAdversarial",
    "hostile_text",
    "hostile_values",
]
