"""The report's summary page: every output of the run with caption and provenance.

Besides the table of outputs, the provenance records of every rule are gathered
into one JSON file (``summary/provenance.json``, embedded in the report) and a
software section that lists the package versions, Python, platform, hosts and
GPUs the records saw; a package seen at two versions in one run is flagged,
because its outputs were then not made by one software stack.
"""

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


def load_records(provenance_files: list[str]) -> dict[str, dict]:
    """Provenance record of every rule, by the record's path."""
    return {str(path): json.loads(Path(path).read_text()) for path in sorted(provenance_files)}


def software_stack(records: Mapping[str, Mapping]) -> dict:
    """Versions and machines across the records; several values mean a mixed run."""

    def seen(values) -> list:
        return sorted({str(v) for v in values if v not in (None, "")})

    packages: dict[str, set] = {}
    for record in records.values():
        for name, version in record.get("packages", {}).items():
            packages.setdefault(name, set()).add(version)
    gpus = [
        f"{device.get('name')} (driver {device.get('driver_version')})"
        for record in records.values()
        for device in record.get("gpu", {}).get("devices", [])
    ]
    return {
        "packages": {name: sorted(versions) for name, versions in sorted(packages.items())},
        "python": seen(r.get("python") for r in records.values()),
        "platform": seen(r.get("platform") for r in records.values()),
        "hosts": seen(r.get("host") for r in records.values()),
        "gpus": sorted(set(gpus)),
        "backends": seen(r.get("backend") for r in records.values()),
    }


def gathered_provenance(records: Mapping[str, Mapping]) -> dict:
    """What ``summary/provenance.json`` holds: the stack, then every record."""
    return {"software": software_stack(records), "records": dict(records)}


def _software_html(stack: Mapping) -> list[str]:
    parts = ["<h2>Software and platform</h2><table><tr><th>item</th><th>value</th></tr>"]
    rows = [(key, stack[key]) for key in ("python", "platform", "hosts", "backends", "gpus")]
    rows += [(name, versions) for name, versions in stack["packages"].items()]
    for name, values in rows:
        text = ", ".join(values) or "none"
        mixed = (
            " <b>(several versions in one run)</b>"
            if name in stack["packages"] and len(values) > 1
            else ""
        )
        parts.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(text)}{mixed}</td></tr>")
    parts.append("</table>")
    return parts


def _records_html(records: Mapping[str, Mapping]) -> list[str]:
    parts = ["<h2>Provenance records</h2>"]
    for path, record in records.items():
        body = html.escape(json.dumps(record, indent=2, sort_keys=True))
        parts.append(
            f"<details><summary><code>{html.escape(path)}</code> (rule "
            f"{html.escape(str(record.get('rule')))})</summary><pre>{body}</pre></details>"
        )
    return parts


def render_html(table: pd.DataFrame, records: Mapping[str, Mapping] | None = None) -> str:
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
    if records:
        parts += _software_html(software_stack(records)) + _records_html(records)
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_step(ctx) -> dict:
    """Snakemake step: provenance records -> outputs.html, outputs.tsv, provenance.json."""
    from warpbio.io import atomic_write

    files = [str(p) for p in ctx.input.provenance]
    table = gather(files, dict(ctx.params.targets))
    records = load_records(files)
    with atomic_write(ctx.output.tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    with atomic_write(ctx.output.html) as tmp:
        Path(tmp).write_text(render_html(table, records))
    if getattr(ctx.output, "gathered", None) is not None:
        with atomic_write(ctx.output.gathered) as tmp:
            Path(tmp).write_text(json.dumps(gathered_provenance(records), indent=2) + "\n")
    log.info("summarised %d outputs of %d workflows", len(table), table["workflow"].nunique())
    return {}
