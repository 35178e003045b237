"""``index.html``: the run as a page that opens from disk (relative links,
inline CSS and SVG, no script)."""

from __future__ import annotations

import html
from pathlib import Path

from ..text import printable, url_path
from ..types import IGNORE


def _e(s) -> str:
    """Text for the page: control characters and undecodable bytes shown escaped
    (a name that is not UTF-8 could not even be written to the file), then HTML-escaped."""
    return html.escape(printable(s))


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def _pct(n: int, total: int) -> str:
    p = 100.0 * n / total
    return "&lt;0.1%" if 0 < p < 0.05 else f"{p:.1f}%"


def stage_plot_svg(median_ms: dict[str, float], width: int = 520) -> str:
    """Median milliseconds per stage as horizontal bars (inline SVG, no script)."""
    items = [(k, v) for k, v in median_ms.items() if k != "total"]
    if not items:
        return "<p>No stage timings.</p>"
    vmax = max(max(v for _, v in items), median_ms.get("total", 0.0), 1e-9)
    row, label_w, bar_w = 20, 90, width - 90 - 80
    rows = items + ([("total", median_ms["total"])] if "total" in median_ms else [])
    h = row * len(rows) + 6
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'role="img" aria-label="median milliseconds per stage">']
    for i, (k, v) in enumerate(rows):
        y = 3 + i * row
        w = max(1.0, bar_w * v / vmax)
        fill = "#4a6fa5" if k != "total" else "#8a8a8a"
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" '
                     f'font-size="12">{html.escape(k)}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" '
                     f'fill="{fill}"/><text x="{label_w + w + 4:.1f}" y="{y + 14}" '
                     f'font-size="12">{v:.1f} ms</text>')
    parts.append("</svg>")
    return "".join(parts)


def live_html(live: dict | None) -> str:
    """A camera's or stream's per-frame latency, keyframe rate, drops and reconnects."""
    if not live:
        return ""
    lat = live.get("latency_ms") or {}
    fmt = lambda v, unit="": "n/a" if v is None else f"{v:g}{unit}"          # noqa: E731
    rate = live.get("keyframe_rate")
    rows = [("latency p50 (read to result)", fmt(lat.get("p50"), " ms")),
            ("latency p95", fmt(lat.get("p95"), " ms")),
            ("keyframe rate", "n/a" if rate is None else f"{100 * rate:.0f}%"),
            ("frames dropped while busy", fmt(live.get("dropped"))),
            ("reconnects", fmt(live.get("reconnects")))]
    return ("<h2>Live input</h2><table>" + "".join(
        f'<tr><td>{html.escape(k)}</td><td class="num">{html.escape(v)}</td></tr>'
        for k, v in rows) + "</table>")


def index_html(*, title, names, palette, class_pixels, unassigned, median_ms, gallery,
               n_frames, n_overlays, video, overlays, skipped, unknown=None,
               live=None) -> str:
    """A self-contained page (relative links, inline CSS and SVG, no script); a video
    run embeds ``overlay.mp4`` (H.264) as a ``<video>``.

    ``unknown``: pixels labelled unknown (``runtime.unknown`` on; None: off); they are
    not part of ``unassigned``. ``live``: a camera's or stream's latency and drops.
    """
    from ..render import UNKNOWN_COLOUR
    from ..types import UNKNOWN
    e = _e
    total_px = max(1, sum(class_pixels.values()) + unassigned + (unknown or 0))
    present = sorted(((n, c) for n, c in class_pixels.items() if c), key=lambda t: -t[1])
    index_of = {n: i for i, n in enumerate(names)}
    legend = "".join(
        f'<span class="item"><span class="sw" style="background:{_hex(palette[index_of[n]])}">'
        f'</span>{e(n)}</span>' for n, _ in present)
    share_rows = "".join(
        f'<tr><td><span class="sw" style="background:{_hex(palette[index_of[n]])}"></span>'
        f'{e(n)}</td><td class="num">{_pct(c, total_px)}</td><td class="bar">'
        f'<div style="width:{100.0 * c / present[0][1]:.1f}%;'
        f'background:{_hex(palette[index_of[n]])}"></div></td></tr>' for n, c in present)
    unknown_html = ""
    if unknown is not None:
        ucol = _hex(UNKNOWN_COLOUR)
        share_rows += (f'<tr><td><span class="sw" style="background:{ucol}"></span>unknown'
                       f'</td><td class="num">{_pct(unknown, total_px)}</td>'
                       f'<td class="bar"><div style="width:'
                       f'{100.0 * unknown / max(present[0][1] if present else 1, 1):.1f}%;'
                       f'background:{ucol}"></div></td></tr>')
        unknown_html = (f'<p class="unknown"><span class="sw" style="background:{ucol}"></span>'
                        f'<b>{_pct(unknown, total_px)}</b> of the run was <b>unknown</b> '
                        f'(label {UNKNOWN}): too far from every class of the bank '
                        f'(<code>runtime.unknown</code>).</p>')
        if unknown:
            legend += (f'<span class="item"><span class="sw" style="background:{ucol}">'
                       f'</span>unknown</span>')
    if unassigned:
        share_rows += (f'<tr><td><span class="sw" style="background:#000"></span>unassigned'
                       f'</td><td class="num">{_pct(unassigned, total_px)}</td>'
                       f'<td></td></tr>')
    if not overlays:
        gallery_html = "<p>Overlays were not written (<code>--no-overlay</code>).</p>"
    else:
        # links percent-encode the file's bytes: '#', '?', '%' and newlines in a file name
        # would otherwise cut the link short or point elsewhere
        figs = "".join(f'<figure><a href="{html.escape(url_path(g))}"><img '
                       f'src="{html.escape(url_path(g))}" alt="{e(g)}"></a>'
                       f'<figcaption>{e(Path(g).stem)}</figcaption></figure>' for g in gallery)
        first = f' poster="{e(gallery[0])}"' if gallery else ""
        note = (f'<video src="overlay.mp4" controls muted playsinline preload="metadata"'
                f'{first}>Your browser cannot play <a href="overlay.mp4">overlay.mp4</a>.'
                f'</video><p><a href="overlay.mp4">overlay.mp4</a> ({n_frames} frames); '
                f'stills:</p>' if video else
                (f"<p>Showing {len(gallery)} of {n_overlays} overlays; all are in "
                 f'<a href="overlays/">overlays/</a>.</p>' if n_overlays > len(gallery) else ""))
        gallery_html = note + f'<div class="gallery">{figs}</div>'
    skipped_html = ""
    if skipped:
        skipped_html = ("<h2>Skipped inputs</h2><ul>" + "".join(
            f"<li>{e(s['error'])}</li>" for s in skipped) + "</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moduseg: {e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.2em; color: #222; background: #fafafa; }}
h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1.05em; margin-top: 1.4em; }}
.legend .item {{ display: inline-block; margin: 0 1em 0.4em 0; }}
.sw {{ display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.35em;
       vertical-align: -0.1em; border: 1px solid #555; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 10px; }}
video {{ max-width: 100%; display: block; border: 1px solid #ccc; background: #000; }}
figure {{ margin: 0; }} figure img {{ width: 320px; display: block; border: 1px solid #ccc; }}
figcaption {{ font-size: 0.8em; color: #555; }}
table {{ border-collapse: collapse; }} td {{ padding: 2px 8px; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.bar {{ width: 240px; }} td.bar div {{ height: 0.8em; }}
.row {{ display: flex; flex-wrap: wrap; gap: 2.5em; }}
</style></head>
<body>
<h1>moduseg segment: {e(title)}</h1>
<p>{n_frames} frame(s). Label maps in <a href="labels/">labels/</a> (pixel value = class
index, {IGNORE} = unassigned); every segment with its mask in
<a href="segments.json">segments.json</a>.</p>
{unknown_html}<div class="legend">{legend}</div>
<h2>Overlays</h2>
{gallery_html}
<div class="row">
<div><h2>Pixel share per class</h2><table>{share_rows}</table></div>
<div><h2>Median time per stage</h2>{stage_plot_svg(median_ms)}
<p><small>Stages overlap (some run side by side), so they need not add up to the
total.</small></p></div>
<div>{live_html(live)}</div>
</div>
{skipped_html}
</body></html>
"""
