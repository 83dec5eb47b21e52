"""Write an eval's summary: ``summary.json``, ``summary.md`` and the ``accuracy.png`` plot."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from core.fsutil import atomic_write_bytes, atomic_write_text
from evals.spec import NOT_DECIDING

RULE = ("supports_claim is true when the 95% CI of the memorization gap lies above 0, false when "
        "it lies below 0 or inside +-5 points with power to see a 10-point gap, else null "
        "(inconclusive).")


def write_outputs(summary: dict[str, Any], out_dir: Path) -> None:
    """Write ``summary.json``, ``summary.md`` and ``accuracy.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Atomic: a reader never sees half a summary, and a full disk leaves no temporary file.
    atomic_write_text(out_dir / "summary.json",
                      json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write_text(out_dir / "summary.md", render_markdown(summary))
    plot_accuracy(summary, out_dir / "accuracy.png")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _ci(ci: list[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "[n/a]"
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def render_markdown(summary: dict[str, Any]) -> str:
    """Render the summary as a short Markdown report (accuracies in percent)."""
    seen, unseen = summary["splits"]["seen"], summary["splits"]["unseen"]
    models = summary["models"]
    roles = summary.get("model_roles") or {name: role for role, name in models.items()}
    first, second = models["fine_tuned"], models["base"]
    lines = [f"# Eval: {summary['spec']['description']}", "",
             f"Design: {summary.get('design', 'n/a')}", ""]
    if not summary.get("decides", False):
        lines += [NOT_DECIDING, ""]
    lines += [f"Spec `{summary['spec']['path']}` (sha256 {summary['spec']['sha256'][:12]}), "
              f"scoring `{summary['scoring']}`, split mode `{summary['split_mode']}`.", "",
              f"| model | role | {seen} acc % [95% CI] | {unseen} acc % [95% CI] |",
              "|---|---|---|---|"]
    for name in (first, second):
        row = summary["accuracy"].get(name, {})
        cells = [f"{_pct(row[s]['accuracy'])} {_ci(row[s]['ci'])} (n={row[s]['n']})"
                 if s in row else "n/a" for s in (seen, unseen)]
        lines.append(f"| {name} | {roles.get(name, '?')} | {cells[0]} | {cells[1]} |")
    lines += ["", f"{first} minus {second}, paired by item (points):", ""]
    for split in (seen, unseen):
        diff = summary["paired_difference"][split]
        lines.append(f"- {split}: {_pct(diff['diff'])} {_ci(diff['ci'])} (n={diff['n']})")
    gap = summary["gap"]
    p_value = gap["p_value"]
    gap_name = "Memorization gap" if summary.get("decides", False) else "Difference in differences"
    lines += ["", f"{gap_name} ({seen} advantage minus {unseen} advantage): "
              f"{_pct(gap['gap'])} points, 95% CI {_ci(gap['ci'])}, permutation p = "
              f"{'n/a' if p_value is None else f'{p_value:.4f}'}.", "",
              f"**supports_claim: {json.dumps(summary['supports_claim'])}**. {RULE}"]
    if summary.get("power_warnings"):
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in summary["power_warnings"]]
    counts = summary.get("counts", {})
    lines += ["", f"Items: train {counts.get('train')}, test {counts.get('test')}, available "
              f"per split {counts.get('per_split_available')}, sampled "
              f"{counts.get('per_split_sampled')}, tasks {counts.get('tasks')}."]
    if counts.get("variants"):
        lines.append(f"Variants: {counts['variants']}.")
    if summary.get("stages_s"):
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary["stages_s"].items())
        lines += ["", f"Stages: {stages}."]
    return "\n".join(lines) + "\n"


def plot_accuracy(summary: dict[str, Any], path: Path) -> None:
    """Draw grouped bars of accuracy by split and model, with 95% CI error bars, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    splits = [summary["splits"]["seen"], summary["splits"]["unseen"]]
    models = [summary["models"]["fine_tuned"], summary["models"]["base"]]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for k, model in enumerate(models):
        row = summary["accuracy"].get(model, {})
        heights, low_err, high_err = [], [], []
        for split in splits:
            cell = row.get(split) or {}
            acc = cell.get("accuracy")
            ci = cell.get("ci") or [None, None]
            heights.append(acc or 0.0)
            low_err.append(0.0 if acc is None or ci[0] is None else max(acc - ci[0], 0.0))
            high_err.append(0.0 if acc is None or ci[1] is None else max(ci[1] - acc, 0.0))
        xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(splits))]
        ax.bar(xs, heights, width, yerr=[low_err, high_err], capsize=4, label=model)
    ax.set_xticks(range(len(splits)), splits)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(summary["spec"]["description"][:60])
    ax.legend()
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    atomic_write_bytes(path, image.getvalue())  # never a half-drawn PNG on a full disk
