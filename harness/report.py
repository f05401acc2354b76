"""Tables made from result records (never from logs)."""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple


def format_table(headers: Sequence[str], rows: Iterable[Sequence], aligns: str = "") -> str:
    """A plain fixed-width text table; `aligns` has one 'l'/'r' per column (default: first left)."""
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    aligns = aligns or ("l" + "r" * (len(headers) - 1))

    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, aligns))

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A Markdown table (what the benchmark scripts print for the README)."""
    out = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + " --- |" * len(headers)]
    out += ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def latency_rows(record: Dict) -> List[List]:
    rows = []
    for v in record.get("variants", []):
        lat = v.get("latency")
        if lat is None:
            rows.append([record["model"]["name"], record["model"]["batch"], v["variant"], v.get("target", ""),
                         "n/a", "", "", "", "", "", "", v.get("note", "")])
            continue
        rows.append([
            record["model"]["name"], lat["batch"], v["variant"], v.get("target", ""),
            f"{lat['mean_ms']:.3f}", f"{lat['median_ms']:.3f}", f"{lat['std_ms']:.3f}",
            f"{lat['min_ms']:.3f}", f"{lat['max_ms']:.3f}", f"{lat['ms_per_image']:.3f}",
            f"{lat['images_per_s']:.1f}", v.get("note", ""),
        ])
    return rows


LATENCY_HEADERS = ["model", "batch", "variant", "target", "mean ms", "median", "std", "min", "max",
                   "ms/img", "img/s", "note"]


def latency_table(records: Sequence[Dict]) -> str:
    rows = [r for rec in records for r in latency_rows(rec)]
    return format_table(LATENCY_HEADERS, rows, aligns="lrll" + "r" * 7 + "l")


def accuracy_table(record: Dict) -> str:
    a = record["accuracy"]
    headers = ["dataset", "samples", "top1 agree", "top1 agree (confident)", "top5 overlap", "cosine mean",
               "cosine min"]
    conf = a.get("top1_agreement_confident")
    row = [a["dataset"], a["samples"], f"{a['top1_agreement']:.3f}",
           "n/a" if conf is None else f"{conf:.3f} of {a['confident_samples']}", f"{a['top5_overlap']:.3f}",
           f"{a['cosine_mean']:.5f}", f"{a['cosine_min']:.5f}"]
    if "top1_fp32" in a:
        headers += ["top1 fp32", "top1 int8"]
        row += [f"{a['top1_fp32']:.4f}", f"{a['top1_int8']:.4f}"]
    if "top5_fp32" in a:
        headers += ["top5 fp32", "top5 int8"]
        row += [f"{a['top5_fp32']:.4f}", f"{a['top5_int8']:.4f}"]
    return format_table(headers, [row], aligns="l" + "r" * (len(headers) - 1))


def accuracy_target_lines(result: Dict) -> str:
    """What the accuracy-target search chose (harness.accuracy_target), for the terminal."""
    bound = f"{result['bound']} {result['value']:g}"
    layers = ", ".join(result["fp32_layers"]) or "none"
    reached = result["reached"]
    head = (f"accuracy target {result['metric']} {bound} on {result['dataset']}: "
            + ("met" if result["met"] else "NOT met") + f" with {len(result['fp32_layers'])} layer(s) kept fp32 "
            f"(bound {result['max_fp32_layers']}): {layers}")
    got = f"reached: cosine {reached['cosine_mean']:.5f}, top-1 agreement {reached['top1_agreement']:.3f}"
    if "top1_int8" in reached:
        got += f", top-1 int8 {reached['top1_int8']:.4f} (fp32 {reached['top1_fp32']:.4f}, drop " \
               f"{reached['top1_drop']:.4f})"
    lines = [head, "  " + got]
    if result.get("note"):
        lines.append("  " + result["note"])
    return "\n".join(lines)


# ----------------------------------------------------------------------------- suite table (2019 "tvm-cuda-int8")
#
# The 2019 study's table has one row per (model, batch), one column per system (ms/image) and a
# Relative column (each system / the fastest in the row). `harness report` builds it from records.

FIRST_SYSTEMS = ("tvm-int8", "tvm-fp32")
FORMATS = ("text", "md", "csv", "json")


@dataclass
class Cell:
    """One (model, batch, system) measurement: ms/image, or None with the reason in `note`."""

    model: str
    batch: int
    system: str
    target: str
    ms: Optional[float]  # latency.ms_per_image; None when not measured
    note: str
    created: str  # the record's ISO time
    path: str  # the record file


def _error(msg: str):
    from .errors import HarnessError

    return HarnessError(msg)


def _read_record(path: str) -> Dict:
    from .record import SCHEMA_VERSION

    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise _error(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise _error(f"{path}: not JSON ({e})") from None
    if not isinstance(rec, dict) or "schema_version" not in rec:
        raise _error(f"{path}: not a result record (no schema_version)")
    if rec["schema_version"] != SCHEMA_VERSION:
        raise _error(f"{path}: record schema version {rec['schema_version']} (this harness reads {SCHEMA_VERSION})")
    model = rec.get("model")
    if (not isinstance(model, dict) or "name" not in model or "batch" not in model
            or not isinstance(rec.get("variants"), list) or not isinstance(rec.get("created"), str)):
        raise _error(f"{path}: not a run record (needs model.name, model.batch, variants, created)")
    for v in rec["variants"]:
        if not isinstance(v, dict) or "variant" not in v or not (v.get("latency") is None
                                                                 or "ms_per_image" in v["latency"]):
            raise _error(f"{path}: malformed variant entry {v!r:.80}")
    rec["path"] = path
    return rec


def load_records(paths: Sequence[str]) -> List[Dict]:
    """Records from files and directories (every *.json below a directory, recursively, sorted).

    A file named in `paths` that is not a run record of this schema version raises HarnessError naming
    it; one found in a directory (a corrupt or foreign .json) is skipped with a HarnessWarning naming it,
    unless no record is left. A file reached twice is read once.
    """
    import warnings

    from .errors import HarnessError, HarnessWarning

    files: List[Tuple[str, bool]] = []  # (path, found in a directory)
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if f.endswith(".json"))
            if not found:
                raise _error(f"{p}: no *.json result records in this directory")
            files += [(f, True) for f in found]
        elif os.path.exists(p):
            files.append((p, False))
        else:
            raise _error(f"{p}: no such file or directory")
    seen, records, skipped = set(), [], []
    for f, in_dir in files:
        real = os.path.realpath(f)
        if real in seen:
            continue
        seen.add(real)
        try:
            records.append(_read_record(f))
        except HarnessError as e:
            if not in_dir:
                raise
            skipped.append(str(e))
    if not records and skipped:
        more = f" (and {len(skipped) - 1} more file(s) that are not records)" if len(skipped) > 1 else ""
        raise _error(f"no result records: {skipped[0]}{more}")
    for reason in skipped:
        warnings.warn(f"skipped {reason}", HarnessWarning, stacklevel=2)
    if not records:
        raise _error("no result records given")
    return records


def _created(rec: Dict) -> _dt.datetime:
    text = rec.get("created", "")
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _error(f"{rec.get('path', '?')}: bad 'created' time {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)  # harness records are UTC


def _cells(records: Sequence[Dict]):
    """Every variant of every record as a Cell, with the record's time (oldest first, ties: load order)."""
    order = sorted(range(len(records)), key=lambda i: (_created(records[i]), i))
    for i in order:
        rec = records[i]
        for v in rec["variants"]:
            lat = v.get("latency")
            ms = None if lat is None else float(lat["ms_per_image"])
            note = "" if lat is not None else (v.get("note") or "no latency in record")
            yield i, Cell(model=rec["model"]["name"], batch=int(rec["model"]["batch"]), system=v["variant"],
                          target=v.get("target") or (rec.get("target") or {}).get("key", ""), ms=ms, note=note,
                          created=rec["created"], path=rec.get("path", ""))


class SuiteRows(dict):
    """(model, batch) -> {system: Cell}, rows in table order; `.systems` is the column order."""

    systems: List[str]


def suite_rows(records: Sequence[Dict]) -> SuiteRows:
    """Merge records into the suite table's cells.

    A (model, batch, system) found in several records comes from the newest record (`created`; on equal
    times the one loaded last), whatever its target. Columns: tvm-int8, tvm-fp32, then the other systems in
    order of first appearance (load order); rows: models in order of first appearance, then batch.
    """
    systems: List[str] = []
    models: List[str] = []
    for rec in records:
        if rec["model"]["name"] not in models:
            models.append(rec["model"]["name"])
        for v in rec["variants"]:
            if v["variant"] not in systems:
                systems.append(v["variant"])
    systems = [s for s in FIRST_SYSTEMS if s in systems] + [s for s in systems if s not in FIRST_SYSTEMS]
    merged: Dict[Tuple[str, int], Dict[str, Cell]] = {}
    for _, cell in _cells(records):  # oldest first: newer cells overwrite
        merged.setdefault((cell.model, cell.batch), {})[cell.system] = cell
    rows = SuiteRows()
    for key in sorted(merged, key=lambda k: (models.index(k[0]), k[1])):
        rows[key] = {s: merged[key][s] for s in systems if s in merged[key]}
    rows.systems = systems
    return rows


def relative(row: Dict[str, Cell], systems: Sequence[str]) -> List[Optional[float]]:
    """Each system's ms/image over the fastest in the row (None where not measured)."""
    ms = [row[s].ms if s in row else None for s in systems]
    known = [m for m in ms if m is not None]
    best = min(known) if known else None
    return [None if m is None or not best else m / best for m in ms]


def _relative_text(rel: Sequence[Optional[float]]) -> str:
    return " / ".join("-" for _ in rel) if all(r is None for r in rel) else \
        " / ".join("-" if r is None else f"{r:.2f}" for r in rel)


def _date_range(records: Sequence[Dict]) -> str:
    days = sorted(_created(r).date().isoformat() for r in records)
    return days[0] if days[0] == days[-1] else f"{days[0]} .. {days[-1]}"


def _distinct(values) -> List[str]:
    out: List[str] = []
    for v in values:
        if v and v not in out:
            out.append(v)
    return out


def machine_label(records: Sequence[Dict]) -> str:
    """'CPU, GPU' of the records' machines (distinct ones joined by '; ')."""
    labels = []
    for r in records:
        m = r.get("machine") or {}
        labels.append(", ".join(x for x in (m.get("cpu"), m.get("gpu")) if x) or "unknown machine")
    return "; ".join(_distinct(labels))


def provenance(records: Sequence[Dict]) -> str:
    """One line: machine(s), TVM version(s), target key(s), the records' date range and count."""
    tvm = ", ".join(_distinct((r.get("software") or {}).get("tvm") for r in records)) or "unknown"
    targets = ", ".join(_distinct((r.get("target") or {}).get("key") for r in records)) or "unknown"
    return (f"machine: {machine_label(records)}; TVM {tvm}; target {targets}; "
            f"records {_date_range(records)} ({len(records)} record{'s' * (len(records) != 1)})")


def _notes(rows: SuiteRows) -> List[Cell]:
    return [c for row in rows.values() for c in row.values() if c.ms is None]


def suite_table(records: Sequence[Dict], fmt: str = "text") -> str:
    """The suite table as text / md / csv / json.

    text, md: ms/image with 3 decimals, "n/a" where not measured, then the n/a reasons as footnotes
    and a provenance line (machine, TVM version, targets, date range).
    csv: header model, batch, <systems...>, Relative, notes; ms/image unrounded, n/a cells empty, the
    n/a reasons in the one `notes` column as "system: reason; system: reason".
    json: a list of {"model", "batch", <system>: ms/image or null, ..., "relative": {system: ratio or null},
    "notes": {system: reason}}.
    """
    if fmt not in FORMATS:
        raise _error(f"unknown report format '{fmt}' (one of {', '.join(FORMATS)})")
    rows = suite_rows(records)
    systems = rows.systems
    if fmt == "json":
        out = []
        for (model, batch), row in rows.items():
            d = {"model": model, "batch": batch}
            d.update({s: row[s].ms if s in row else None for s in systems})
            d["relative"] = dict(zip(systems, relative(row, systems)))
            d["notes"] = {s: c.note for s, c in row.items() if c.ms is None}
            out.append(d)
        return json.dumps(out, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["model", "batch", *systems, "Relative", "notes"])
        for (model, batch), row in rows.items():
            w.writerow([model, batch, *("" if s not in row or row[s].ms is None else repr(row[s].ms)
                                        for s in systems),
                        _relative_text(relative(row, systems)),
                        "; ".join(f"{s}: {c.note}" for s, c in row.items() if c.ms is None)])
        return buf.getvalue()

    headers = ["model", "batch", *systems, "Relative"]
    body = [[model, str(batch), *("n/a" if s not in row or row[s].ms is None else f"{row[s].ms:.3f}"
                                  for s in systems), _relative_text(relative(row, systems))]
            for (model, batch), row in rows.items()]
    missing = [(m, b, s) for (m, b), row in rows.items() for s in systems if s not in row]
    notes = [f"{c.system}, {c.model}, batch {c.batch}: {c.note}" for c in _notes(rows)]
    notes += [f"{s}, {m}, batch {b}: not in any record" for m, b, s in missing]
    legend = (f"Cells: ms/image (mean latency / batch; lower is better). Relative: {' / '.join(systems)} "
              f"over the fastest in the row.")
    if fmt == "md":
        esc = lambda t: str(t).replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
                 "|" + "|".join([" --- ", " ---: "] + [" ---: "] * len(systems) + [" --- "]) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in body]
        lines += ["", legend]
        if notes:
            lines += ["", "n/a:"] + [f"- {esc(n)}" for n in notes]
        lines += ["", esc(provenance(records))]
        return "\n".join(lines)
    table = format_table(headers, body, aligns="lr" + "r" * len(systems) + "l")
    lines = [ln.rstrip() for ln in table.splitlines()] + ["", legend]
    if notes:
        lines += ["n/a:"] + [f"  {n}" for n in notes]
    lines.append(provenance(records))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figure


def plot_suite(records: Sequence[Dict], path: str) -> str:
    """Grouped bars like the 2019 figure: ms/image per model (groups) and system (bars), one panel per
    batch size; n/a bars are left out (marked "n/a" on the axis) but every system is in the legend.
    Writes a PNG to `path` and returns it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = suite_rows(records)
    systems = rows.systems
    if not rows:
        raise _error("nothing to plot: the records hold no variants")
    batches = sorted({b for _, b in rows})
    colors = {s: f"C{i % 10}" for i, s in enumerate(systems)}
    widest = max(sum(1 for _, b in rows if b == batch) for batch in batches)
    fig = Figure(figsize=(max(6.0, 1.5 + widest * (0.4 + 0.25 * len(systems))), 0.8 + 3.6 * len(batches)),
                 dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(batches), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(systems))
    for ax, batch in zip(axes, batches):
        keys = [k for k in rows if k[1] == batch]
        top = max([c.ms for k in keys for c in rows[k].values() if c.ms is not None] or [1.0])
        for j, s in enumerate(systems):
            for i, k in enumerate(keys):
                x = i - 0.4 + width * (j + 0.5)
                cell = rows[k].get(s)
                if cell is not None and cell.ms is not None:
                    ax.bar(x, cell.ms, width=width * 0.95, color=colors[s])
                    ax.text(x, cell.ms, f"{cell.ms:.2f}", ha="center", va="bottom", fontsize=6, rotation=90)
                else:
                    ax.text(x, top * 0.01, "n/a", ha="center", va="bottom", fontsize=6, rotation=90, color="0.5")
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([m for m, _ in keys])
        ax.set_xlim(-0.6, len(keys) - 0.4)
        ax.set_ylim(0, top * 1.18)
        ax.set_ylabel("ms / image (lower is better)")
        ax.set_title(f"batch {batch}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    ncol = min(5, len(systems))
    legend_rows = -(-len(systems) // ncol)
    fig.legend(handles=[Patch(color=colors[s], label=s) for s in systems], fontsize=8, ncol=ncol,
               loc="lower center", frameon=False)
    tvm = ", ".join(_distinct((r.get("software") or {}).get("tvm") for r in records))
    fig.suptitle(f"{machine_label(records)} - TVM {tvm or '?'} - {_date_range(records)}", fontsize=10)
    fig.tight_layout(rect=(0, 0.25 * legend_rows / fig.get_figheight(), 1, 1))
    fig.savefig(path, format="png")
    return path


# ----------------------------------------------------------------------------- regression check


@dataclass
class CellComparison:
    """One (model, batch, system, target) cell: now vs baseline ms/image.

    status: "regression" (slower than the baseline by more than fail_over), "ok", or "not compared"
    (the cell is only on one side, or not measured on one side; `reason` says which)."""

    model: str
    batch: int
    system: str
    target: str
    baseline_ms: Optional[float]
    now_ms: Optional[float]
    status: str
    reason: str = ""

    @property
    def change(self) -> Optional[float]:
        """now / baseline - 1 (0.10: 10% slower)."""
        if self.baseline_ms is None or self.now_ms is None or not self.baseline_ms:
            return None
        return self.now_ms / self.baseline_ms - 1.0


def _latest_cells(records: Sequence[Dict]) -> Dict[Tuple[str, int, str, str], Cell]:
    cells: Dict[Tuple[str, int, str, str], Cell] = {}
    for _, c in _cells(records):
        cells[(c.model, c.batch, c.system, c.target)] = c
    return cells


def compare_cells(records: Sequence[Dict], baseline_records: Sequence[Dict],
                  fail_over: float = 0.05) -> List[CellComparison]:
    """Every cell of either side, matched by (model, batch, system, target key); newest record wins on
    each side. Results first, in table order, then cells only in the baseline."""
    now, base = _latest_cells(records), _latest_cells(baseline_records)
    out = []
    for key in list(now) + [k for k in base if k not in now]:
        n, b = now.get(key), base.get(key)
        cmp = CellComparison(*key, baseline_ms=b.ms if b else None, now_ms=n.ms if n else None, status="ok")
        if b is None:
            cmp.status, cmp.reason = "not compared", "not in the baseline"
        elif n is None:
            cmp.status, cmp.reason = "not compared", "not in the results"
        elif b.ms is None or n.ms is None:
            cmp.status = "not compared"
            cmp.reason = "; ".join(f"{side} n/a: {c.note}" for side, c in (("baseline", b), ("now", n))
                                   if c.ms is None)
        elif n.ms > b.ms * (1.0 + fail_over):
            cmp.status = "regression"
        out.append(cmp)
    both = suite_rows(list(records) + list(baseline_records))
    order = {k: i for i, k in enumerate(both)}
    out.sort(key=lambda c: (order[(c.model, c.batch)], c.status == "not compared", both.systems.index(c.system),
                            c.target))
    return out


def compare(records: Sequence[Dict], baseline_records: Sequence[Dict],
            fail_over: float = 0.05) -> List[CellComparison]:
    """The regressions: cells whose ms/image exceeds the baseline's by more than `fail_over` (a fraction).
    Use compare_cells() for every cell, including those not compared."""
    return [c for c in compare_cells(records, baseline_records, fail_over) if c.status == "regression"]


def compare_summary(cells: Sequence[CellComparison], fail_over: float) -> str:
    """A table of every cell (baseline ms, now ms, change %) and a one-line verdict."""
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [[c.model, c.batch, c.system, c.target, fmt(c.baseline_ms), fmt(c.now_ms),
             "" if c.change is None else f"{c.change * 100:+.1f}%",
             c.status + (f" ({c.reason})" if c.reason else "")] for c in cells]
    table = format_table(["model", "batch", "system", "target", "baseline ms/img", "now ms/img", "change", "status"],
                         rows, aligns="lrllrrrl")
    table = "\n".join(ln.rstrip() for ln in table.splitlines())
    n_reg = sum(c.status == "regression" for c in cells)
    n_cmp = sum(c.status != "not compared" for c in cells)
    n_not = len(cells) - n_cmp
    verdict = (f"{n_cmp} compared, {n_reg} regression{'s' * (n_reg != 1)} over +{fail_over * 100:g}%, "
               f"{n_not} not compared")
    return f"{table}\n{verdict}"


def parse_fraction(text: str) -> float:
    """'5%' or '0.05' -> 0.05. A bare number over 1 is refused (write '150%' to mean 1.5)."""
    import math

    t = str(text).strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise _error(f"--fail-over: '{text}' is not a fraction or a percentage (e.g. 5% or 0.05)") from None
    if not math.isfinite(value) or value < 0:
        raise _error(f"--fail-over: '{text}' must be a finite, non-negative amount (e.g. 5% or 0.05)")
    if not t.endswith("%") and value > 1:
        raise _error(f"--fail-over: '{text}' reads as {value * 100:g}%; write '{t}%' for {t} percent")
    return value
