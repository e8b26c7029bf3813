"""The results of a run as a table (terminal and Markdown), JSON and a bar chart."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

COLUMNS = ("id", "op", "shape", "nnkern ms", "numpy ms", "torch ms", "x vs numpy", "x vs torch", "target x",
           "nnkern GFLOP/s or GB/s", "% peak")
OK, MISS = "✓", "✗"


def fmt_ms(ms: Optional[float]) -> str:
    if ms is None:
        return "—"
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def fmt_ratio(x: Optional[float]) -> str:
    if x is None:
        return "—"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_rate(rate: Optional[float], metric: str) -> str:
    if rate is None:
        return "—"
    unit = "GFLOP/s" if metric == "flop" else "GB/s"
    return f"{rate:.0f} {unit}" if rate >= 100 else f"{rate:.1f} {unit}"


class Footnotes:
    """Numbered notes, one per distinct text."""

    def __init__(self) -> None:
        self.texts: List[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"

    def lines(self) -> List[str]:
        return [f"[{i + 1}] {t}" for i, t in enumerate(self.texts)]


def _ms_cell(row: Dict[str, Any], name: str, notes: Footnotes) -> str:
    c = row["contenders"].get(name)
    if c is None:
        return "—"
    if c["status"] != "ok":
        return "n/a " + notes.mark(f"{row['id']} {name}: {c['reason']}")
    cell = fmt_ms(c["median_ms"])
    fallback = row.get("numpy_fallback_ops")
    if name == "nnkern" and fallback:
        every = len(fallback) == len(row.get("ops", ()))
        cell += " " + notes.mark("no native kernel for any op of the row yet: nnkern ran the NumPy reference"
                                 if every else "nnkern ran these ops on the NumPy reference (no native kernel "
                                 "yet): " + ", ".join(fallback))
    mismatch = row.get("check", {}).get(name)
    if mismatch and not mismatch["ok"]:
        cell += " " + notes.mark(f"{row['id']} {name}: result differs from {mismatch['against']}: "
                                 f"{mismatch['detail']}")
    return cell


def _mark(flag: Optional[bool]) -> str:
    return "" if flag is None else " " + (OK if flag else MISS)


def table_rows(results: List[Dict[str, Any]], notes: Footnotes) -> List[List[str]]:
    rows = []
    for r in results:
        t = r["targets"]
        rows.append([
            _id_cell(r, notes), r["op"], r["shape"],
            _ms_cell(r, "nnkern", notes), _ms_cell(r, "numpy", notes), _ms_cell(r, "torch", notes),
            fmt_ratio(r["speedup_vs_numpy"]) + _mark(r["meets_numpy_target"]),
            fmt_ratio(r["speedup_vs_torch"]),
            t["text"] + _mark(r["meets_target"]),
            fmt_rate(r["nnkern_rate"], r["metric"]),
            "—" if r["pct_peak"] is None else f"{r['pct_peak']:.0f}%",
        ])
    return rows


def _render(columns: Sequence[str], body: List[List[str]], first_numeric: int) -> List[str]:
    """A Markdown table, its columns padded so that it also reads well in a terminal; the columns from
    ``first_numeric`` on are right-aligned."""
    widths = [max(len(columns[i]), *(len(b[i]) for b in body)) if body else len(columns[i])
              for i in range(len(columns))]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i >= first_numeric else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "| " + " | ".join(("-" * (w - 1) + ":") if i >= first_numeric else "-" * w
                            for i, w in enumerate(widths)) + " |"
    return [line(columns), sep, *(line(b) for b in body)]


def markdown_table(results: List[Dict[str, Any]], notes: Optional[Footnotes] = None) -> List[str]:
    """The main table as Markdown."""
    return _render(COLUMNS, table_rows(results, notes or Footnotes()), 3)


LAYOUT_COLUMNS = ("id", "op", "nnkern ms (NCHW)", "torch ms (NCHW)", "torch ms (channels_last)",
                  "x vs torch channels_last")
LAYOUT_TITLE = "PyTorch on channels_last copies of the same data (its fastest CPU layout for these ops)"
LAYOUT_LEGEND = ("Issue 4 set the pooling and batch-norm targets against NCHW PyTorch so as to beat PyTorch's "
                 "best layout too (on BENCH.md's machine channels_last ran P1 in 1.8 ms, P2 in 0.18 ms, B1 in "
                 "2.9 ms). x vs torch channels_last: that time / nnkern's (NCHW) time.")


def layout_table(results: List[Dict[str, Any]], notes: Optional[Footnotes] = None) -> List[str]:
    """The rows timed against PyTorch in channels_last too, as a Markdown table (empty when none were)."""
    notes = notes or Footnotes()
    body = [[r["id"], r["op"], _ms_cell(r, "nnkern", notes), _ms_cell(r, "torch", notes),
             _ms_cell(r, "torch_channels_last", notes), fmt_ratio(r.get("speedup_vs_torch_channels_last"))]
            for r in results if "torch_channels_last" in r["contenders"]]
    return _render(LAYOUT_COLUMNS, body, 2) if body else []


def results_lines(results: List[Dict[str, Any]]) -> List[str]:
    """The terminal report below the header: the table, its legend, the channels_last table (when any
    row has that peer) and the footnotes of both."""
    notes = Footnotes()
    table, layouts = markdown_table(results, notes), layout_table(results, notes)
    lines = ["", *table, "", LEGEND]
    if layouts:
        lines += ["", LAYOUT_TITLE + ":", "", *layouts, "", LAYOUT_LEGEND]
    return lines + notes.lines()


# Other processes taking more than this fraction of the machine's CPUs during a row make its timings suspect.
CONTENTION = 0.05


def _id_cell(r: Dict[str, Any], notes: Footnotes) -> str:
    busy = r.get("cpu_contention") or {}
    load = busy.get("others", 0.0) + busy.get("steal", 0.0)
    if load <= CONTENTION:
        return r["id"]
    return r["id"] + " " + notes.mark("other processes (or the hypervisor) used more than "
                                      f"{CONTENTION:.0%} of the CPUs while this row ran: its timings are noisy "
                                      "(see cpu_contention in the JSON)")


LEGEND = ("x vs numpy / x vs torch: the peer's median ms / nnkern's median ms (> 1: nnkern is faster). "
          f"target x: BENCH.md's speedup target vs PyTorch ({OK} met, {MISS} missed); the {OK}/{MISS} after "
          "x vs numpy: BENCH.md's target vs the NumPy backend (5x conv, 10x pooling, 3x batch norm, "
          "2x recurrent). % peak: of the FMA peak (GFLOP/s rows) or of the copy bandwidth (GB/s rows).")


def header_lines(meta: Dict[str, Any]) -> List[str]:
    m = meta["machine"]
    v = m["versions"]
    ceil = meta["ceilings"]

    def ceiling(key, unit):
        val = ceil.get(key)
        if val is None:
            return "—"
        src = ceil.get("source", {}).get(key, "")
        return f"{val:.1f} {unit}" + ("" if src == "measured" else f" (from {src})")
    lines = [
        f"nnkern bench ({meta['mode']}) — {m['date']}",
        f"CPU: {m['cpu_model']}, {m['cpus']} CPUs for this process, nnkern ISA: {m['isa']}",
        f"versions: nnkern {v['nnkern']}, numpy {v['numpy']} ({m['numpy_blas']}), torch {v['torch'] or 'absent'}, "
        f"python {m['python']}",
        f"threads: {m['threads']} (nnkern, torch; numpy BLAS: {meta.get('numpy_threads', '?')}); "
        f"{meta['repeats']} interleaved rounds, samples >= {meta['min_sample_ms']:.0f} ms, "
        f"{meta.get('settle_ms', 0):.0f} ms idle then {meta.get('warmup_calls', 0)} untimed call(s) before each",
        f"ceilings at {m['threads']} thread(s): FMA peak {ceiling('peak_gflops', 'GFLOP/s')}, "
        f"copy bandwidth {ceiling('copy_gbs', 'GB/s')}",
    ]
    lines += [f"WARNING: {w}" for w in meta.get("warnings", [])]
    return lines


def text_report(meta: Dict[str, Any], results: List[Dict[str, Any]]) -> str:
    return "\n".join([*header_lines(meta), *results_lines(results)]) + "\n"


def write_markdown(path: str, meta: Dict[str, Any], results: List[Dict[str, Any]]) -> None:
    notes = Footnotes()
    table = markdown_table(results, notes)
    head = header_lines(meta)
    layouts = layout_table(results, notes)
    out = [f"# {head[0]}", "", *(f"- {h}" for h in head[1:]), "", *table, "", LEGEND, ""]
    if layouts:
        out += [f"## {LAYOUT_TITLE}", "", *layouts, "", LAYOUT_LEGEND, ""]
    out += [f"{n}  " for n in notes.lines()]
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


def write_json(path: str, meta: Dict[str, Any], results: List[Dict[str, Any]]) -> None:
    Path(path).write_text(json.dumps({**meta, "rows": results}, indent=1, default=_jsonable) + "\n",
                          encoding="utf-8")


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_plot(path: str, meta: Dict[str, Any], results: List[Dict[str, Any]]) -> Optional[str]:
    """A bar chart of the speedups (log scale); returns an error message instead when matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "--plot needs matplotlib (pip install matplotlib); no chart was written"
    ids = [r["id"] for r in results]
    series = [("vs torch", "speedup_vs_torch", "tab:red"), ("vs numpy", "speedup_vs_numpy", "tab:blue")]
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(ids) + 2), 4.5))
    for k, (label, key, color) in enumerate(series):
        xs = [i + (k - 0.5) * width for i in range(len(ids))]
        ys = [r[key] if r[key] else math.nan for r in results]
        ax.bar(xs, ys, width, label=f"nnkern speedup {label}", color=color)
    tx = [i - 0.5 * width for i, r in enumerate(results) if r["targets"]["vs_torch"]]
    ty = [r["targets"]["vs_torch"] for r in results if r["targets"]["vs_torch"]]
    ax.scatter(tx, ty, marker="_", s=300, color="black", zorder=3, label="target vs torch")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(ids)))
    ax.set_xticklabels(ids, rotation=45)
    ax.set_ylabel("speedup (peer ms / nnkern ms)")
    m = meta["machine"]
    ax.set_title(f"nnkern {m['versions']['nnkern']} — {m['cpu_model']}, {m['threads']} thread(s)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
