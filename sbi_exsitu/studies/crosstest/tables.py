"""The tables and generated summary of ``sbi-exsitu crosstest``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.atomic import atomic_write_text
from sbi_exsitu.evaluation.misspecification import roc_auc
from sbi_exsitu.studies.crosstest.grid import (
    CrosstestSection,
    aperture_label,
    relation,
)

__all__ = [
    "TABLE_COLUMNS",
    "grid_rows",
    "misspecification_columns",
    "write_grid_tables",
    "markdown_table",
    "read_csv",
    "table_row",
    "summarize_grid",
    "write_csv",
]


def read_csv(path: Path) -> dict[str, np.ndarray]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]} if rows else {}


TABLE_COLUMNS = (
    "train",
    "test",
    "relation",
    "channels",
    "aperture",
    "n",
    "n_galaxies",
    "bias",
    "scatter",
    "rmse",
    "nlpd",
    "coverage_error",
    "coverage_area",
    "verdict",
    "flag_rate",
    "auc",
    "set_mmd_pvalue",
)


def table_row(res: dict[str, Any], auc: float) -> dict[str, Any]:
    o = res["metrics"]["overall"]
    cal, ms = res["calibration"], res["misspecification"]
    return {
        "train": res["train"],
        "test": res["test"],
        "relation": relation(res["train"], res["test"]),
        "channels": res["channels"],
        "aperture": aperture_label(res["aperture"]),
        "n": res["n"],
        # The verdict counts galaxies (views of one galaxy are correlated).
        "n_galaxies": cal.get("n_galaxies"),
        "bias": o["bias"],
        "scatter": o["scatter"],
        "rmse": o["rmse"],
        "nlpd": o.get("nlpd"),
        "coverage_error": cal["max_abs_coverage_error"],
        "coverage_area": cal["coverage_area"],
        "verdict": cal["verdict"],
        "flag_rate": ms["flag_rate"],
        "auc": auc,
        "set_mmd_pvalue": ms["set_test"]["p_value"],
    }


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path) -> Path:

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for r in rows:
        w.writerow(
            [
                ""
                if r.get(c) is None
                else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                for c in columns
            ]
        )
    atomic_write_text(path, buf.getvalue())
    return path


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def summarize_grid(
    rows: list[dict[str, Any]], misspec: list[dict[str, Any]], sec: CrosstestSection
) -> str:
    """The generated Markdown summary: best transfer, the paper's test, the flag."""
    per = _per_config(rows, sec)
    lines = ["# Cross-simulator study: summary (generated)", ""]
    lines += _transfer_lines(per)
    lines += _central_finding_lines(per, sec)
    lines += _misspecification_lines(misspec, sec.alpha)
    return "\n".join(lines) + "\n"


_Config = tuple[str, str]  # (channel set, aperture label)


def _per_config(
    rows: list[dict[str, Any]], sec: CrosstestSection
) -> dict[_Config, dict[str, float]]:
    """Mean RMSE per relation and mean coverage error (cross, fixed) per config."""
    configs = [(c, aperture_label(a)) for a in sec.apertures for c in sec.channels]
    per: dict[_Config, dict[str, float]] = {}
    for c, a in configs:
        sel = [r for r in rows if r["channels"] == c and r["aperture"] == a]
        per[(c, a)] = {
            rel: _mean([r["rmse"] for r in sel if r["relation"] == rel])
            for rel in ("fixed", "cross", "union")
        } | {
            "cross_cov": _mean(
                [r["coverage_error"] for r in sel if r["relation"] == "cross"]
            ),
            "fixed_cov": _mean(
                [r["coverage_error"] for r in sel if r["relation"] == "fixed"]
            ),
        }
    return per


def _transfer_lines(per: dict[_Config, dict[str, float]]) -> list[str]:
    """Best/worst cross-model transfer, transfer loss and best in-model accuracy.

    Configurations without a finite cross-model RMSE are left out of the
    ranking; with none left, the section is empty.
    """
    ranked = sorted(
        (k for k in per if np.isfinite(per[k]["cross"])), key=lambda k: per[k]["cross"]
    )
    if not ranked:
        return []
    best, worst = ranked[0], ranked[-1]
    b, w = per[best], per[worst]
    lines = [
        f"- **Best transfer**: {best[0]} within {best[1]} r_e — cross-model "
        f"RMSE {b['cross']:.3f} (in-model {b['fixed']:.3f}; gap "
        f"{b['cross'] - b['fixed']:+.3f}), max coverage error across models "
        f"{b['cross_cov']:.3f}.",
        f"- **Worst transfer**: {worst[0]} within {worst[1]} r_e — cross RMSE "
        f"{w['cross']:.3f} (in-model {w['fixed']:.3f}; gap "
        f"{w['cross'] - w['fixed']:+.3f}), coverage error {w['cross_cov']:.3f}.",
        f"- The best configuration's cross-model RMSE is "
        f"{w['cross'] - b['cross']:.3f} lower ({w['cross'] / b['cross']:.2f}x) "
        "than the worst one's.",
    ]
    gaps = sorted(ranked, key=lambda k: per[k]["cross"] - per[k]["fixed"])
    lo, hi = gaps[0], gaps[-1]
    lines.append(
        f"- Transfer loss (cross − in-model RMSE) is smallest for {lo[0]} within "
        f"{lo[1]} r_e ({per[lo]['cross'] - per[lo]['fixed']:+.3f}) and largest "
        f"for {hi[0]} within {hi[1]} r_e "
        f"({per[hi]['cross'] - per[hi]['fixed']:+.3f})."
    )
    fixed_best = min(per, key=lambda k: per[k]["fixed"])
    lines.append(
        f"- Best in-model accuracy: {fixed_best[0]} within "
        f"{fixed_best[1]} r_e (RMSE {per[fixed_best]['fixed']:.3f})."
    )
    return lines


def _central_finding_lines(
    per: dict[_Config, dict[str, float]], sec: CrosstestSection
) -> list[str]:
    """The paper's test: does the second highlighted cell transfer better?"""
    hl = sec.highlighted()
    if len(hl) < 2:
        return []
    (c0, a0), (c1, a1) = hl[0], hl[1]
    l0, l1 = aperture_label(a0), aperture_label(a1)
    p0, p1 = per[(c0, l0)], per[(c1, l1)]
    holds = p1["cross"] < p0["cross"] and p1["cross_cov"] < p0["cross_cov"]
    return [
        "",
        "## The paper's central finding",
        "",
        f"{c1} within {l1} r_e vs {c0} within {l0} r_e: cross "
        f"RMSE {p1['cross']:.3f} vs {p0['cross']:.3f}, cross coverage "
        f"error {p1['cross_cov']:.3f} vs {p0['cross_cov']:.3f}, in-model "
        f"RMSE {p1['fixed']:.3f} vs {p0['fixed']:.3f} (transfer loss "
        f"{p1['cross'] - p1['fixed']:+.3f} vs {p0['cross'] - p0['fixed']:+.3f}). "
        + (
            "**Holds** on these mocks: the restricted configuration "
            "transfers better in both accuracy and calibration."
            if holds
            else "**Does not hold** here (at least one of "
            "cross-model accuracy and calibration is not better)."
        ),
    ]


def _misspecification_lines(misspec: list[dict[str, Any]], alpha: float) -> list[str]:
    """Flag rates and AUCs averaged over cells, and the most detectable shift."""
    if not misspec:
        return []
    fa = _mean([m["false_alarm_rate"] for m in misspec])
    det = _mean([m["detection_rate"] for m in misspec])
    auc = _mean([m["auc"] for m in misspec])
    # The other method's AUC columns are named auc_<method>.
    others = "".join(
        f" ({key[4:]} score: AUC {_mean([m[key] for m in misspec]):.3f})"
        for key in misspec[0]
        if key.startswith("auc_")
    )
    lines = [
        "",
        "## Misspecification flag",
        "",
        f"Averaged over single-model cells: false-alarm rate {fa:.3f} "
        f"(alpha = {alpha}), detection rate on the other model's test "
        f"set {det:.3f}, ROC AUC {auc:.3f}" + others + ".",
    ]
    top = max(
        (m for m in misspec if m.get("auc") is not None and np.isfinite(m["auc"])),
        key=lambda m: m["auc"],
        default=None,
    )
    if top is not None:
        lines.append(
            f"Most detectable shift: train {top['train']}, "
            f"{top['channels']} within {top['aperture']} r_e "
            f"(AUC {top['auc']:.3f}, detection "
            f"{top['detection_rate']:.3f})."
        )
    return lines


def misspecification_columns(method: str) -> tuple[str, ...]:
    """Columns of the per-cell flag table; the AUC of the other method rides along."""
    other = "knn" if method == "mmd" else "mmd"
    return (
        "train",
        "test",
        "channels",
        "aperture",
        "false_alarm_rate",
        "detection_rate",
        "auc",
        f"auc_{other}",
        "set_pvalue_in",
        "set_pvalue_cross",
    )


def grid_rows(
    results: list[dict[str, Any]],
    scores: dict[tuple[str, str], dict[str, np.ndarray]],
    method: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one table row per tested cell, one flag row per cross-model test).

    ``scores[(cell, test)]`` are the per-galaxy misspecification scores of a
    cell's test on one model; a cross-model AUC takes the cell's in-model scores
    as the negatives.
    """
    other = "knn" if method == "mmd" else "mmd"
    rows, misspec = [], []
    for res in results:
        auc = float("nan")
        if relation(res["train"], res["test"]) == "cross":
            neg = scores[(res["cell"], res["train"])]
            pos = scores[(res["cell"], res["test"])]
            auc = roc_auc(neg["misspec_score"], pos["misspec_score"])
            fixed = next(
                r
                for r in results
                if r["cell"] == res["cell"] and r["test"] == res["train"]
            )
            fixed_ms, cross_ms = fixed["misspecification"], res["misspecification"]
            misspec.append(
                {
                    "train": res["train"],
                    "test": res["test"],
                    "channels": res["channels"],
                    "aperture": aperture_label(res["aperture"]),
                    "false_alarm_rate": fixed_ms["flag_rate"],
                    "detection_rate": cross_ms["flag_rate"],
                    "auc": auc,
                    f"auc_{other}": roc_auc(
                        neg[f"misspec_score_{other}"], pos[f"misspec_score_{other}"]
                    ),
                    "set_pvalue_in": fixed_ms["set_test"]["p_value"],
                    "set_pvalue_cross": cross_ms["set_test"]["p_value"],
                }
            )
        rows.append(table_row(res, auc))
    return rows, misspec


def write_grid_tables(
    root: Path,
    rows: list[dict[str, Any]],
    misspec: list[dict[str, Any]],
    sec: CrosstestSection,
) -> tuple[list[Path], str]:
    """Write table.csv/.md, misspecification.csv and summary.md: (files, summary)."""
    ms_cols = misspecification_columns(sec.method)
    files = [write_csv(rows, TABLE_COLUMNS, root / "table.csv")]
    atomic_write_text(root / "table.md", markdown_table(rows, TABLE_COLUMNS))
    files += [
        root / "table.md",
        write_csv(misspec, ms_cols, root / "misspecification.csv"),
    ]
    summary = summarize_grid(rows, misspec, sec)
    summary += "\n## Table\n\n" + markdown_table(rows, TABLE_COLUMNS)
    if misspec:
        summary += "\n## Misspecification flag per cell\n\n" + markdown_table(
            misspec, ms_cols
        )
    atomic_write_text(root / "summary.md", summary)
    files.append(root / "summary.md")
    return files, summary
