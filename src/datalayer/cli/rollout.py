"""``datalayer rollout ...``: copy a pattern's data to the store it moves to, compare both
stores, and show where each rollout stands."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.markup import escape

from datalayer.api import DataLayer
from datalayer.api import open as open_datalayer
from datalayer.categories.feature import FeaturePattern, FeatureRolloutConfig
from datalayer.cli.render import (
    ConfigOption,
    ProfileOption,
    console,
    fitted_table,
    progress_bar,
    reports_errors,
)
from datalayer.errors import DataLayerError

rollout_app = typer.Typer(
    help="Move a pattern to another store: backfill, verify, status.", no_args_is_help=True
)
PatternArgument = Annotated[str, typer.Argument(help="The pattern being rolled out.")]


def _router(dl: DataLayer, name: str) -> Any:
    """The pattern's rollout router; an error saying why there is none."""
    pattern = dl.pattern(name)
    if pattern.store_rollout() is None:
        raise DataLayerError(
            f"pattern '{name}' has no rollout: add 'rollout: {{to: <store>, stage: shadow}}'"
        )
    return getattr(dl, pattern.accessor)(name).backend


@rollout_app.command("backfill")
@reports_errors
def rollout_backfill(
    pattern: PatternArgument,
    restart: Annotated[
        bool, typer.Option(help="Start over instead of resuming from the checkpoint.")
    ] = False,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Copy the pattern's keys (or documents) from its store to the one it moves to,
    resuming where an interrupted run stopped; a key the new store has already (a write made
    since the rollout began) is left as it is."""
    from datalayer.rollout import Checkpoints, Progress, backfill, sides

    with open_datalayer(config, profile) as dl:
        router = _router(dl, pattern)
        to = router.rollout.config.to
        checkpoints = Checkpoints(dl.rollout_folder)
        progress = Progress(to) if restart else checkpoints.load(pattern, to)
        if progress.done:
            console.print(f"[green]✓[/] {pattern}: backfilled already (--restart to copy again)")
            return
        old, new = sides(router, dl.pattern(pattern))
        with progress_bar(40) as bar:
            task = bar.add_task(f"copying {pattern} to {to}", total=None)
            done = backfill(
                old,
                new,
                progress,
                lambda p: checkpoints.save(pattern, p),
                on_batch=lambda keys: bar.advance(task, keys),
            )
    console.print(
        f"[green]✓[/] {pattern}: {done.copied:,} keys copied to {escape(to)}, "
        f"{done.present:,} there already"
    )


@rollout_app.command("verify")
@reports_errors
def rollout_verify(
    pattern: PatternArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    repair: Annotated[
        bool,
        typer.Option(
            help="Give the new store the current store's value of each mismatch, then verify "
            "again (best with writers quiet)."
        ),
    ] = False,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Compare both stores completely: key counts, then every key's value (SHA-256); exit 1
    when they differ, listing the keys."""
    from datalayer.rollout import sides, verify

    with open_datalayer(config, profile) as dl:
        router = _router(dl, pattern)
        old, new = sides(router, dl.pattern(pattern))
        with progress_bar(40) as bar:
            task = bar.add_task(f"comparing {pattern}", total=None)
            found = verify(old, new, on_batch=lambda k: bar.advance(task, k), repair=repair)
            if repair and found.repaired:
                repaired = found.repaired
                found = verify(old, new, on_batch=lambda k: bar.advance(task, k))
                found.repaired = repaired
                if not as_json:  # JSON has it as "repaired"
                    console.print(
                        f"{pattern}: {repaired:,} mismatches set right from the current store"
                    )
    if as_json:
        print(json.dumps({"pattern": pattern, "clean": found.clean, **asdict(found)}, indent=2))
    else:
        console.print(
            f"{pattern}: {found.old_keys:,} keys on the current store, {found.new_keys:,} on "
            f"{escape(router.rollout.config.to)}"
        )
        for kind, said in (
            ("differing", "values differ"),
            ("only_old", "missing on the new store"),
            ("only_new", "only on the new store"),
        ):
            if found.mismatches[kind]:
                keys = ", ".join(found.keys[kind][:10])
                console.print(
                    f"[red]✗[/] {found.mismatches[kind]:,} {said}: {escape(keys)}", soft_wrap=True
                )
    if not found.clean:
        raise typer.Exit(1)
    if not as_json:
        console.print("[green]✓[/] both stores hold the same keys and values")


@rollout_app.command("status")
@reports_errors
def rollout_status(
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Each rollout's stage and split, what processes met (shadow reads compared and
    mismatched, writes the new store failed), and the backfill's progress; a feature
    pattern's model rollout with its share of entities."""
    from datalayer.rollout import Checkpoints

    with open_datalayer(config, profile) as dl:
        checkpoints = Checkpoints(dl.rollout_folder)
        rows = []
        for name, pattern in dl.registry.patterns.items():
            rollout = pattern.store_rollout()
            if isinstance(pattern, FeaturePattern) and pattern.rollout is not None:
                rows.append(_model_rollout(name, pattern.rollout))
            if rollout is None:
                continue
            counts = checkpoints.counts(name)
            progress = checkpoints.load(name, rollout.to)
            backfilled = (
                "done"
                if progress.done
                else (f"{progress.copied:,} copied" if progress.cursor else "not started")
            )
            rows.append(
                {
                    "pattern": name,
                    "to": rollout.to,
                    "stage": rollout.stage,
                    "percent": f"{rollout.percent:g}" if rollout.stage == "split" else "",
                    "compared": f"{counts.get('compared', 0):,}",
                    "mismatches": f"{counts.get('mismatches', 0):,}",
                    "write failures": f"{counts.get('write_failures', 0):,}",
                    "backfill": backfilled,
                }
            )
    if not rows:
        console.print("no pattern has a rollout")
        return
    console.print(
        fitted_table(
            "rollouts",
            rows,
            keep=["pattern", "to", "stage", "mismatches", "write failures"],
            drop_first=["compared", "percent", "backfill"],
            width=console.width,
        )
    )


def _model_rollout(name: str, rollout: FeatureRolloutConfig) -> dict[str, str]:
    """A feature pattern's rollout to another feature service, as a row of the status."""
    return {
        "pattern": name,
        "to": f"feature service {rollout.to_feature_service}",
        "stage": "split",
        "percent": f"{rollout.percent:g}",
        "compared": "",
        "mismatches": "",
        "write failures": "",
        "backfill": "",
    }
