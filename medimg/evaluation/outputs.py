"""Per-set outputs of an evaluation: ``metrics.json``, ``curves.json``, PNG figures, ``report.html``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from medimg.evaluation import figures
from medimg.evaluation.report import (
    Section,
    bullet_list,
    figure_html,
    fmt,
    paragraph,
    table_html,
    with_ci,
    write_report,
)
from medimg.evaluation.segmentation import CASE_METRICS
from medimg.evaluation.sets import HEADLINE
from medimg.files import write_json

COMPARED = {
    "binary": ("auroc", "auprc", "sensitivity", "specificity", "balanced_accuracy", "brier", "ece"),
    "multiclass": ("auroc", "auprc", "argmax_accuracy", "balanced_accuracy", "brier", "ece"),
    "multilabel": ("auroc", "auprc", "sensitivity", "specificity", "brier", "ece"),
    "regression": ("mae", "rmse", "r2", "pearson_r"),
    "segmentation": ("dice", "iou", "nsd", "hd95_mm", "asd_mm"),
}


def set_metrics(results: dict, name: str) -> dict:
    """The JSON written as ``<set>/metrics.json``: the set's block (no curves) and its context."""
    block = {k: v for k, v in results["sets"][name].items() if k != "curves"}
    comparisons = {
        other: c
        for other, c in results["comparisons"].items()
        if other == name or c["against"] == name
    }
    keys = ("kind", "mode", "internal", "operating_point", "conventions", "settings")
    return {"set": name, **{k: results[k] for k in keys}, **block, "comparisons": comparisons}


def make_figures(results: dict, name: str, folder: Path, overlays=None) -> dict[str, Path]:
    """All PNG figures of one set; returns figure name → path."""
    mode, block, internal = results["mode"], results["sets"][name], results["internal"]
    # The internal set's report shows every set; an external one shows itself beside the internal.
    # Colours follow the set order, as in the comparison figure.
    shown = [s for s in results["sets"] if name in (internal, s) or s == internal]
    out: dict[str, Path] = {}
    curves = block.get("curves", {})
    if curves:
        rocs, prs = {}, {}
        for set_name in shown:
            for cls, c in results["sets"][set_name]["curves"].items():
                label = set_name if cls == "positive" else f"{set_name}: {cls}"
                if "roc" in c:
                    rocs[label], prs[label] = c["roc"], c["pr"]
        if rocs:
            out["roc"] = figures.roc_figure(rocs, folder / "roc.png")
            out["pr"] = figures.pr_figure(prs, folder / "pr.png")
        rel = {
            (s if cls == "positive" else f"{s}: {cls}"): c["reliability"]
            for s in shown
            for cls, c in results["sets"][s]["curves"].items()
        }
        out["reliability"] = figures.reliability_figure(
            rel, folder / "reliability.png", results["settings"]["ece_bins"]
        )
        out["confusion"] = figures.confusion_figure(
            _confusion_panels(block), folder / "confusion.png"
        )
    headline = HEADLINE[mode]
    if any(b.get("groups") for b in block["subgroups"].values()) and headline in block["metrics"]:
        out["forest"] = figures.forest_figure(
            block["subgroups"], headline, block["metrics"][headline], folder / "subgroups.png"
        )
    if len(results["sets"]) > 1:
        metrics = [m for m in COMPARED[mode] if m in block["metrics"]]
        out["comparison"] = figures.comparison_figure(
            results["sets"], metrics, folder / "comparison.png"
        )
    if overlays:
        out["overlays"] = figures.overlay_figure(overlays, folder / "overlays.png")
    return out


def _confusion_panels(block: dict) -> list[dict]:
    """Multi-class: the K×K argmax matrix; otherwise one 2×2 per class at its operating point."""
    if "confusion_argmax" in block:
        return [{"title": "argmax", **block["confusion_argmax"]}]
    return [
        {
            "title": f"{'' if cls == 'positive' else cls + ': '}threshold {c['threshold']:.3f}",
            "matrix": c["confusion"],
            "labels": ["neg", "pos"],
        }
        for cls, c in block["curves"].items()
    ][:6]


def _metrics_section(results: dict, name: str) -> Section:
    block = results["sets"][name]
    sets = list(results["sets"])
    ordered = [name] + [s for s in sets if s != name]
    comparisons = {
        o: c for o, c in results["comparisons"].items() if o == name or c["against"] == name
    }
    rows = []
    for metric in block["metrics"]:
        row = {"metric": metric}
        for s in ordered:
            row[s] = with_ci(results["sets"][s]["metrics"].get(metric))
        delong = block["metrics"][metric].get("delong_ci")
        if delong:
            row[f"{name}: DeLong"] = f"[{fmt(delong[0])}, {fmt(delong[1])}]"
        for other, c in comparisons.items():
            d = c["metrics"].get(metric)
            row[f"{other} − {c['against']}"] = with_ci(d)
            row[f"p ({c['design']})"] = fmt(d["p_value"]) if d else "–"
        rows.append(row)
    body = [table_html(pd.DataFrame(rows).fillna("–"), "Metrics [95% CI] side by side")]
    counts = block["counts"]
    body.insert(0, paragraph(", ".join(f"{k}: {v}" for k, v in counts.items())))
    for other, c in comparisons.items():
        if "delong_paired" in c:
            d = c["delong_paired"]
            body.append(
                paragraph(
                    f"DeLong paired test, AUROC {other} − {c['against']}: "
                    f"{fmt(d['difference'])} [{fmt(d['ci'][0])}, {fmt(d['ci'][1])}], "
                    f"p = {fmt(d['p_value'], 4)}"
                )
            )
    if block["per_class"]:
        per = pd.DataFrame(
            [
                {"class": cls, **{m: with_ci(v) for m, v in metrics.items()}}
                for cls, metrics in block["per_class"].items()
            ]
        )
        body.append(table_html(per, "Per class [95% CI]", scroll=True))
    return Section("Metrics", body)


def _subgroup_section(results: dict, name: str, figs: dict) -> Section:
    block, mode = results["sets"][name], results["mode"]
    shown = [m for m in COMPARED[mode] if m in block["metrics"]][:4]
    body = [figure_html(figs["forest"], "Subgroup forest plot")] if "forest" in figs else []
    for attribute, info in block["subgroups"].items():
        if info.get("missing"):
            body.append(paragraph(f"{attribute}: not in this set's table", "note"))
            continue
        rows = [
            {
                "group": group,
                "cases": g["n_cases"],
                "patients": g["n_patients"],
                "positives": g["n_positive"],
                **{m: with_ci(g["metrics"].get(m)) for m in shown},
                "warning": "too small to say" if g["too_small"] else "",
            }
            for group, g in info["groups"].items()
        ]
        body.append(table_html(pd.DataFrame(rows), f"By {attribute}"))
        gaps = [
            f"{m}: largest gap {fmt(gap['gap'])} ({gap['high_group']} vs {gap['low_group']}), "
            f"95% CI [{fmt(gap['ci'][0])}, {fmt(gap['ci'][1])}], p = {fmt(gap['p_value'], 4)}"
            + (" — includes too-small groups" if gap["includes_small_groups"] else "")
            for m, gap in info["largest_gap"].items()
            if m in shown
        ]
        if gaps:
            body.append(bullet_list(gaps))
    return Section("Subgroups", body)


def _audit_section(audit: pd.DataFrame) -> Section:
    wide = audit.assign(
        value=[
            f"{fmt(c)} / {fmt(p)} / {fmt(n)}"
            for c, p, n in zip(audit["cases"], audit["positives"], audit["patients"], strict=True)
        ]
    ).pivot_table(
        index=["attribute", "group"], columns="set", values="value", aggfunc="first", sort=False
    )
    wide = wide.reset_index().fillna("–")
    return Section(
        "Dataset audit",
        [table_html(wide, "cases / positives / patients per subgroup and set")],
    )


def _segmentation_section(
    block: dict, cases: pd.DataFrame | None, figs: dict, overlays: Sequence[Mapping] | None
) -> Section:
    counts = {k: v for k, v in block["counts"].items() if "/n_" in k}
    body = [paragraph("Empty structures: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))]
    if "overlays" in figs:
        body.append(figure_html(figs["overlays"], "Best, median and worst case (middle slice)"))
        # Case ids stay out of the figure (it also goes to trackers); the report names them.
        named = [f"{o['title']}: {o['case_id']}" for o in overlays or () if "case_id" in o]
        if named:
            body.append(paragraph("; ".join(named), "note"))
    if cases is not None:
        columns = ["case_id", "class", "status", *[c for c in CASE_METRICS if c in cases]]
        body.append(table_html(cases[columns], "Per-case metrics", scroll=True))
    return Section("Segmentation cases", body)


def set_report_sections(
    results: dict,
    name: str,
    figs: Mapping[str, Path],
    audit: pd.DataFrame | None = None,
    cases: pd.DataFrame | None = None,
    overlays: Sequence[Mapping] | None = None,
) -> list[Section]:
    """The report of one set: summary, metrics, figures, subgroups, audit, conventions."""
    op = results["operating_point"]
    summary = [paragraph(f"Set {name}; task {results['kind']} ({results['mode']}).")]
    if op:
        thresholds = ", ".join(f"{k}: {fmt(v, 4)}" for k, v in op["thresholds"].items())
        summary.append(
            paragraph(
                f"Operating point ({op['method']}, chosen on {op['chosen_on']}): {thresholds}"
            )
        )
        summary += [paragraph(n, "warn") for n in op["notes"]]
    sections = [Section("Summary", summary), _metrics_section(results, name)]
    pictures = [
        figure_html(figs[k], caption)
        for k, caption in (
            ("roc", "ROC with 95% bootstrap band"),
            ("pr", "Precision-recall with 95% bootstrap band"),
            ("reliability", "Reliability diagram"),
            ("confusion", "Confusion matrix (multi-class: argmax; else at the operating point)"),
            ("comparison", "Internal vs external"),
        )
        if k in figs
    ]
    if pictures:
        sections.append(Section("Figures", pictures))
    if results["mode"] == "segmentation":
        sections.append(_segmentation_section(results["sets"][name], cases, figs, overlays))
    sections.append(_subgroup_section(results, name, figs))
    if audit is not None:
        sections.append(_audit_section(audit))
    settings = results["settings"]
    notes = [f"{k}: {v}" for k, v in results["conventions"].items()]
    notes.append(
        f"{settings['n_resamples']} resamples, seed {settings['seed']}, level {settings['level']}"
    )
    sections.append(Section("Methods", [bullet_list(notes)]))
    return sections


def write_set_outputs(
    out_dir: str | Path,
    results: dict,
    audit: pd.DataFrame | None = None,
    case_tables: Mapping[str, pd.DataFrame] | None = None,
    overlays: Mapping[str, Sequence[Mapping]] | None = None,
    subdir: str = "eval",
) -> dict[str, dict[str, Path]]:
    """Write ``<out_dir>/<subdir>/<set>/{metrics.json, curves.json, report.html, *.png}``.

    Args:
        out_dir: the run directory (or any output root).
        results: :func:`medimg.evaluation.sets.evaluate_sets`'s return value.
        audit: :func:`medimg.evaluation.subgroups.audit_table` (shown in every report).
        case_tables: set → per-case table (segmentation: shown as the per-case table; only
            ``case_id``, ``class``, ``status`` and metric columns are shown, never patient ids).
        overlays: set → cases for :func:`medimg.evaluation.figures.overlay_figure` (an
            optional ``case_id`` per case is named in the report, not drawn in the figure).
        subdir: folder under ``out_dir`` holding the sets' folders (``""``: none).

    Returns:
        set → {"folder", "metrics", "report", and each figure name} → path.
    """
    written = {}
    for name in results["sets"]:
        folder = Path(out_dir, subdir, name)
        shown = (overlays or {}).get(name)
        figs = make_figures(results, name, folder, shown)
        paths = {"folder": folder, **figs}
        paths["metrics"] = write_json(folder / "metrics.json", set_metrics(results, name))
        paths["curves"] = write_json(
            folder / "curves.json", results["sets"][name].get("curves", {})
        )
        cases = (case_tables or {}).get(name)
        sections = set_report_sections(results, name, figs, audit, cases, shown)
        paths["report"] = write_report(folder, sections, f"Evaluation: {name}")
        written[name] = paths
    return written
