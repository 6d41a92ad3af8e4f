"""The example's model: will a service be busy (at least ``BUSY`` alerts) in the next hour?

A logistic regression (scikit-learn, seeded) on the grouping features, trained on a
point-in-time training set of the example's feature data, so that the quickstart can show the
whole loop: train, serve, log each read and prediction, label, evaluate. ``predict`` is the
function ``datalayer evaluate --model datalayer.examples.model:predict`` runs on the
point-in-time rows of the logged reads; it loads the model the quickstart saved
(``DATALAYER_EXAMPLE_MODEL``, default ``.datalayer/models/grouping-v1.pkl`` from where it
runs).
"""

from __future__ import annotations

import functools
import os
import pickle
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from datalayer.examples.alerting import Service

#: The model's inputs, as ``historical()`` and ``online()`` name them.
FEATURES = [
    "service_alert_counts__alerts_1h",
    "service_alert_counts__alerts_24h",
    "service_alert_counts__critical_1h",
    "service_alert_counts__error_rate",
    "service_incident_history__incidents_7d",
    "service_incident_history__open_incidents",
    "account_profile__plan_rank",
]
#: Alerts in an hour that make a service busy.
BUSY = 5
NAME, VERSION = "grouping", "v1"
DEFAULT_PATH = Path(".datalayer") / "models" / f"{NAME}-{VERSION}.pkl"


def training_entities(services: list[Service], end: datetime, hours: int = 48) -> Any:
    """Entity rows of every service at the middle of each of the ``hours`` hours before
    ``end``."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "service_id": s.service_id,
                "account_id": s.account_id,
                "event_timestamp": end - timedelta(hours=h, minutes=30),
            }
            for s in services
            for h in range(hours, 0, -1)
        ]
    )


def labelled(training_set: Any) -> Any:
    """The training set with its label: whether the service's next hour was busy (the
    hour's alert count, read an hour later); the last hour of each service has none."""
    frame = training_set.sort_values(["service_id", "event_timestamp"]).reset_index(drop=True)
    following = frame.groupby("service_id")["service_alert_counts__alerts_1h"].shift(-1)
    frame["label"] = (following >= BUSY).astype("Int64").where(following.notna())
    return frame.dropna(subset=["label"]).reset_index(drop=True)


def train(training_set: Any, seed: int = 7) -> Any:
    """A seeded logistic regression of ``label`` on ``FEATURES``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(random_state=seed))
    model.fit(_inputs(training_set), training_set["label"].astype(int))
    return model


def save(model: Any, path: Path = DEFAULT_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.tmp")
    aside.write_bytes(pickle.dumps(model))
    aside.replace(path)
    _load.cache_clear()
    return path


def predict(frame: Any) -> Any:
    """Busy (1) or not (0) for each row of ``frame`` (columns named as ``FEATURES``), by the
    model the quickstart saved."""
    return predicted(_load(os.environ.get("DATALAYER_EXAMPLE_MODEL", str(DEFAULT_PATH))), frame)


def predicted(model: Any, frame: Any) -> Any:
    """``model``'s predictions for the rows of ``frame``."""
    return model.predict(_inputs(frame))


def simulated_label(service: Service, rng: random.Random) -> int:
    """What the next hour brings, drawn as the example's feature data draws alert counts."""
    return int(rng.gauss(6 if service.tier == "gold" else 3, 2) >= BUSY)


@functools.cache
def _load(path: str) -> Any:
    if not Path(path).exists():
        raise FileNotFoundError(
            f"no model at {path}: 'datalayer quickstart' trains and saves it there "
            "(or set DATALAYER_EXAMPLE_MODEL)"
        )
    return pickle.loads(Path(path).read_bytes())


def _inputs(frame: Any) -> Any:
    """The features as floats, a missing value as 0 (online and offline alike)."""
    return frame[FEATURES].astype("float64").fillna(0.0).to_numpy()
