#!/usr/bin/env python3
"""Plots a soak CSV (t_s,rss_kib,fds[,threads,sessions,readings_stored]) as an SVG of stacked
panels sharing the time axis: RSS (MiB), open file descriptors, and sessions when present.
Python standard library only.

Usage: plot_soak.py samples.csv out.svg
"""
import csv
import sys
from xml.sax.saxutils import escape

W, PANEL_H, LEFT, RIGHT, TOP, GAP = 900, 180, 70, 20, 40, 50


def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if raw <= step:
            break
    start = (lo // step) * step
    ticks = []
    v = start
    while v <= hi + 1e-9:
        if v >= lo - 1e-9:
            ticks.append(v)
        v += step
    return ticks


def panel(out, y0, title, xs, ys, color, xmax):
    x_of = lambda x: LEFT + (W - LEFT - RIGHT) * (x / xmax if xmax else 0)
    lo, hi = 0, max(ys) * 1.1 if ys and max(ys) > 0 else 1
    y_of = lambda y: y0 + PANEL_H - PANEL_H * (y - lo) / (hi - lo)
    out.append(f'<text x="{LEFT}" y="{y0 - 8}" font-size="13" font-weight="bold">{escape(title)}</text>')
    out.append(f'<rect x="{LEFT}" y="{y0}" width="{W - LEFT - RIGHT}" height="{PANEL_H}" fill="none" stroke="#999"/>')
    for t in nice_ticks(lo, hi):
        y = y_of(t)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        label = f"{t:.0f}" if hi >= 10 else f"{t:.1f}"
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{label}</text>')
    pts = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in zip(xs, ys))
    out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    return x_of


def main():
    src, dst = sys.argv[1], sys.argv[2]
    rows = list(csv.DictReader(open(src)))
    if not rows:
        sys.exit(f"{src}: no samples")
    t = [float(r["t_s"]) / 60 for r in rows]
    series = [("resident memory (MiB)", [int(r["rss_kib"]) / 1024 for r in rows], "#c0392b"),
              ("open file descriptors", [int(r["fds"]) for r in rows], "#2471a3")]
    if "sessions" in rows[0]:
        series.append(("active sessions", [float(r["sessions"] or 0) for r in rows], "#1e8449"))
    xmax = max(t) or 1
    height = TOP + len(series) * (PANEL_H + GAP) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif">',
           f'<rect width="{W}" height="{height}" fill="white"/>',
           f'<text x="{W / 2}" y="20" font-size="15" text-anchor="middle">iotseal gateway soak: {len(rows)} samples over {xmax:.1f} min</text>']
    x_of = None
    for i, (title, ys, color) in enumerate(series):
        y0 = TOP + 15 + i * (PANEL_H + GAP)
        x_of = panel(out, y0, title, t, ys, color, xmax)
    base = TOP + 15 + (len(series) - 1) * (PANEL_H + GAP) + PANEL_H
    for tick in nice_ticks(0, xmax):
        x = x_of(tick)
        out.append(f'<text x="{x:.1f}" y="{base + 16}" font-size="11" text-anchor="middle">{tick:g}</text>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{base + 34}" font-size="12" text-anchor="middle">minutes</text>')
    out.append("</svg>")
    open(dst, "w").write("\n".join(out))
    rss = series[0][1]
    print(f"{dst}: RSS {rss[0]:.1f} -> {rss[-1]:.1f} MiB (max {max(rss):.1f}), "
          f"fds {series[1][1][0]} -> {series[1][1][-1]} (max {max(series[1][1])})")


if __name__ == "__main__":
    main()
