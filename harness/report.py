"""Tables made from result records (never from logs)."""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence


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
    return format_table(headers, [row], aligns="l" + "r" * (len(headers) - 1))
