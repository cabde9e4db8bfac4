"""Evaluation results as tracker payloads (tables and images) without needing a tracker run.

:func:`to_tracker` returns plain data (column lists, rows, image paths); :func:`to_wandb` turns
that into ``wandb.Table``/``wandb.Image`` objects for ``run.log``. Keys follow the project's
``{stage}/{name}`` convention: ``eval/<set>/metrics``, ``eval/<set>/roc``, …
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

SUBGROUP_COLUMNS = ["attribute", "group", "n_cases", "n_patients", "n_positive", "too_small"]


def to_tracker(results: dict, figures: Mapping[str, Mapping[str, Path]]) -> dict:
    """Tracker payload of an evaluation.

    Args:
        results: :func:`medimg.evaluation.sets.evaluate_sets`'s return value.
        figures: set → figure name → PNG path (as :func:`write_set_outputs` returns; entries
            that are not PNG files are ignored).

    Returns:
        ``{"tables": {key: {"columns": [...], "data": [[...], ...]}}, "images": {key: path},
        "scalars": {key: value}}``.
    """
    tables, images, scalars = {}, {}, {}
    for name, block in results["sets"].items():
        rows = []
        for metric, m in block["metrics"].items():
            low, high = m["ci"]
            rows.append([metric, m["value"], low, high])
            scalars[f"eval/{name}/{metric}"] = m["value"]
        tables[f"eval/{name}/metrics"] = {
            "columns": ["metric", "value", "ci_low", "ci_high"],
            "data": rows,
        }
        sub_rows = []
        metric_names = sorted(
            {
                m
                for a in block["subgroups"].values()
                for g in a["groups"].values()
                for m in g["metrics"]
            }
        )
        for attribute, info in block["subgroups"].items():
            for group, g in info["groups"].items():
                values = [g["metrics"].get(m, {}).get("value") for m in metric_names]
                sub_rows.append(
                    [
                        attribute,
                        group,
                        g["n_cases"],
                        g["n_patients"],
                        g["n_positive"],
                        g["too_small"],
                    ]
                    + values
                )
        tables[f"eval/{name}/subgroups"] = {
            "columns": SUBGROUP_COLUMNS + metric_names,
            "data": sub_rows,
        }
        for figure, path in figures.get(name, {}).items():
            if Path(path).suffix == ".png":
                images[f"eval/{name}/{figure}"] = Path(path)
    for name, comparison in results["comparisons"].items():
        tables[f"eval/{name}/vs_{comparison['against']}"] = {
            "columns": ["metric", "difference", "ci_low", "ci_high", "p_value", "design"],
            "data": [
                [m, d["difference"], d["ci"][0], d["ci"][1], d["p_value"], comparison["design"]]
                for m, d in comparison["metrics"].items()
            ],
        }
    return {"tables": tables, "images": images, "scalars": scalars}


def to_wandb(payload: dict) -> dict:
    """``wandb.Table``/``wandb.Image`` objects and scalars for ``run.log(...)``."""
    import wandb  # imported here: only runs that log to wandb need it

    out = {
        k: wandb.Table(columns=t["columns"], data=t["data"]) for k, t in payload["tables"].items()
    }
    out.update({k: wandb.Image(str(p)) for k, p in payload["images"].items()})
    out.update({k: v for k, v in payload["scalars"].items() if v is not None})
    return out
