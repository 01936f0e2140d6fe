"""The report's summary page: every output of the run with caption and provenance."""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from warpbio.provenance import describe_path

log = logging.getLogger(__name__)

COLUMNS = [
    "workflow",
    "output",
    "caption",
    "rule",
    "bytes",
    "checksum",
    "backend",
    "seed",
    "gpu_ids",
    "wall_seconds",
    "peak_host_memory_mb",
]


def gather(provenance_files: list[str], targets: Mapping[str, list]) -> pd.DataFrame:
    """One row per output recorded in the provenance files."""
    captions = {}
    for workflow, pairs in targets.items():
        for path, caption in pairs:
            captions[str(path)] = (workflow, caption)
    rows = []
    for prov_path in provenance_files:
        record = json.loads(Path(prov_path).read_text())
        outputs = [*record["outputs"], describe_path(prov_path)]
        for output in outputs:
            workflow, caption = captions.get(
                output["path"], (Path(prov_path).parts[-4], f"intermediate of {record['rule']}")
            )
            rows.append(
                {
                    "workflow": workflow,
                    "output": output["path"],
                    "caption": caption,
                    "rule": record["rule"],
                    "bytes": output.get("bytes"),
                    "checksum": output.get("checksum", ""),
                    "backend": record["backend"],
                    "seed": record["seed"],
                    "gpu_ids": ",".join(record["gpu"]["ids"]),
                    "wall_seconds": record["wall_seconds"],
                    "peak_host_memory_mb": round(record["peak_host_memory_bytes"] / 2**20, 1),
                }
            )
    table = pd.DataFrame(rows, columns=COLUMNS).astype({"bytes": "Int64"})
    return table.sort_values(["workflow", "output"], kind="stable").reset_index(drop=True)


def render_html(table: pd.DataFrame) -> str:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>warpbio outputs</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}"
        "th{background:#eee}code{font-size:12px}</style></head><body>",
        "<h1>warpbio run outputs</h1>",
    ]
    for workflow, group in table.groupby("workflow", sort=True):
        parts.append(f"<h2>{html.escape(str(workflow))}</h2><table><tr>")
        parts.extend(f"<th>{html.escape(c)}</th>" for c in COLUMNS if c != "workflow")
        parts.append("</tr>")
        for _, row in group.iterrows():
            cells = []
            for column in COLUMNS[1:]:
                value = row[column]
                text = (
                    ""
                    if value is None or (isinstance(value, float) and pd.isna(value))
                    else str(value)
                )
                if column in ("output", "checksum"):
                    text = f"<code>{html.escape(text)}</code>"
                else:
                    text = html.escape(text)
                cells.append(f"<td>{text}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_step(ctx) -> dict:
    """Snakemake step: provenance records -> outputs.html + outputs.tsv."""
    from warpbio.io import atomic_write

    table = gather([str(p) for p in ctx.input.provenance], dict(ctx.params.targets))
    with atomic_write(ctx.output.tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    with atomic_write(ctx.output.html) as tmp:
        Path(tmp).write_text(render_html(table))
    log.info("summarised %d outputs of %d workflows", len(table), table["workflow"].nunique())
    return {}
