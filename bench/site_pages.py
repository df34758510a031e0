"""The HTML of `tlbench publish` (publish.py gathers what it shows): plain pages, one stylesheet, relative links.

Text from records and suite files is escaped (markdown-it with raw HTML off; html.escape elsewhere). Every number
links to its records, or to the page listing them, and says on hover which runs and commits it came from.
"""
from __future__ import annotations

import html

from markdown_it import MarkdownIt
from markdown_it.token import Token

from . import plots, report, tables
from .publish import Configuration, Entry, Site, Suite, titled

STYLE = """body{font-family:system-ui,sans-serif;max-width:80rem;margin:1.5rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:0.5rem 0 1rem}th,td{border:1px solid #bbb;padding:0.2rem 0.5rem;
vertical-align:top}th{background:#f0f0f0}img{max-width:100%}a{color:#0051a0}nav{margin-bottom:1rem}
.card{border:1px solid #ccc;border-radius:6px;padding:0.5rem 1rem;margin:1rem 0}.card img{max-width:46%}
.regressed{background:#fde0dc;font-weight:bold}.inconclusive{background:#fff4d6}.facts td:first-child{color:#555}
"""
NOTE = ("Hover a number for the runs and commits it came from; follow it to the records. Records are the JSON files "
        "tlbench wrote, copied as they were found.")


def esc(text) -> str:
    return html.escape(str(text))


def link(href: str, text: str, title: str = "") -> str:
    return f'<a href="{esc(href)}"' + (f' title="{esc(title)}"' if title else "") + f">{esc(text)}</a>"


def page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<link rel=\"icon\" href=\"data:,\">\n"
            "<link rel=\"stylesheet\" href=\"style.css\">\n</head>\n<body>\n"
            f"<nav>{link('index.html', 'tlbench results')}</nav>\n<h1>{esc(title)}</h1>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    """Cells are HTML already (escape text with esc)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row in rows)
    return f'<table class="{css}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>'


def markdown(md: str, rows: list[tuple[str, str]] = ()) -> str:
    """Markdown as tlbench's report renders it; `rows`: (href, title) for each body row of its tables in order,
    each cell of the row then a link."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(md)
    targets, target, in_body = iter(rows), None, False
    for token in tokens:
        if token.type in ("tbody_open", "tbody_close"):
            in_body = token.type == "tbody_open"
        elif in_body and token.type == "tr_open":
            target = next(targets, None)
        elif in_body and token.type == "inline" and target and token.children:
            opening = Token("link_open", "a", 1, attrs={"href": target[0], "title": target[1]})
            token.children = [opening, *token.children, Token("link_close", "a", -1)]
    return parser.renderer.render(tokens, parser.options, {})


def figures(paths: list[str], caption: str) -> str:
    return "\n".join(f'<figure><a href="{esc(p)}"><img src="{esc(p)}" alt="{esc(p)}"></a>'
                     f"<figcaption>{caption}</figcaption></figure>" for p in paths)


def facts(records: list[dict]) -> str:
    e = plots.environment(records)
    rows = [("Hardware", e["hardware"]), ("Keras backend", e["backend"]), ("Keras", e["keras"]),
            ("TensorFlow", e["tensorflow"]), ("Commit", e["git"]), ("Dates", e["date"]), ("Runs", len(records))]
    return table(["Setting", "Value"], [[esc(k), esc(v)] for k, v in rows], "facts")


def records_table(entries: list[Entry]) -> str:
    rows = [[link(e.copy, e.run_id), esc(e.source), esc(e.folder), esc(e.machine), esc(e.commit),
             esc(e.record.get("started")), esc(e.record.get("finished")), esc(e.record.get("status"))]
            for e in entries]
    return table(["Record", "Source", "Folder", "Machine", "Commit", "Started", "Finished", "Status"], rows)


def comparison(site: Site, s: Suite) -> str:
    """The suite's comparison table, each row linked to its configuration's page."""
    targets = []
    for row in s.rows():
        ids = row["run_ids"].split()
        entries = [e for e in s.entries if e.run_id in ids]
        targets.append((site.config_of(ids[0], s.folder).page, titled(entries)))
    return markdown(s.table[0], targets)


def card(site: Site, s: Suite, shown: list[str]) -> str:
    title = f"{s.name} · {plots.environment(s.records)['hardware']}"
    return (f'<section class="card" id="{esc(s.page)}">\n<h2>{link(s.page, title)}</h2>\n'
            f"<p>Folder <code>{esc(s.folder)}</code></p>\n{comparison(site, s)}\n"
            + figures(shown[:1], f"Drawn from {link(s.page + '#records', f'these {len(s.entries)} records')}.")
            + "\n</section>")


def index(site: Site, shown: dict[str, list[str]]) -> str:
    rows = []
    for s in site.suites:
        e = plots.environment(s.records)
        rows.append([link(s.page, s.name), f"<code>{esc(s.folder)}</code>", esc(e["hardware"]), esc(e["backend"]),
                     esc(e["keras"]), esc(e["tensorflow"]), esc(e["git"]), esc(e["date"]),
                     link(s.page + "#records", str(len(s.entries)), titled(s.entries))])
    overview = table(["Suite", "Folder", "Machine", "Backend", "Keras", "TensorFlow", "Commit", "Dates", "Runs"],
                     rows, "index")
    body = [f"<p>{esc(NOTE)}</p>", overview, *(card(site, s, shown[s.page]) for s in site.suites)]
    if site.notes:
        body += ["<h2>Left out or noted while reading</h2>", "<ul>"
                 + "".join(f"<li>{esc(n)}</li>" for n in site.notes) + "</ul>"]
    return page("tlbench results", body)


def suite_page(site: Site, s: Suite, shown: list[str]) -> str:
    body = [f"<p>Folder <code>{esc(s.folder)}</code>. {esc(NOTE)}</p>", facts(s.records)]
    if s.found.suite.get("description"):
        body.append(f"<p>{esc(s.found.suite['description'])}</p>")
    body += ["<h2>Comparison table</h2>", comparison(site, s), "<h2>Figures</h2>",
             figures(shown, f"Drawn from the {len(s.entries)} {link('#records', 'records below')}.")]
    if s.found.suite.get("reference"):
        body.append(markdown(report.reference_section(s.found.suite["reference"], s.records)))
    configs = {site.config_of(e.run_id, s.folder).page: site.config_of(e.run_id, s.folder) for e in s.entries}
    body += ["<h2>Configurations</h2>", table(["Configuration", "History points"], [
        [link(c.page, c.label), str(len(c.points))] for c in sorted(configs.values(), key=lambda c: c.label)]),
        '<h2 id="records">Records</h2>', records_table(s.entries)]
    return page(f"{s.name} · {plots.environment(s.records)['hardware']}", body)


def _verdicts(verdicts: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """(the cell, its class): each metric compare would not pass, or 'ok'."""
    flagged = {m: v for m, v in verdicts.items() if v[0] != "ok"}
    if not verdicts:
        return "—", ""
    if not flagged:
        return "ok", ""
    cells = [f'<span title="{esc(why)}">{esc(metric)}: {esc(verdict)}</span>' for metric, (verdict, why) in
             flagged.items()]
    return "<br>".join(cells), "regressed" if any(v == "REGRESSED" for v, _ in flagged.values()) else "inconclusive"


def history(conf: Configuration) -> str:
    final, rows = conf.final, []
    for i, p in enumerate(conf.points, 1):
        row, target = p.row(final), f"#point-{i}"
        cells = [tables.cell(row, "steady_epoch_seconds", tables.secs),
                 tables.cell(row, "steady_images_per_second", lambda v: f"{v:.0f} img/s"),
                 tables.cell(row, f"val_acc_{final}", tables.pct)]
        verdict, css = _verdicts(p.verdicts)
        rows.append([str(i), esc(p.source), f"<code>{esc(p.folder)}</code>", esc(p.machine), esc(p.commit),
                     esc(p.dates), *(link(target, c, titled(p.entries)) for c in cells),
                     f'<span class="{css}">{verdict}</span>'])
    return table(["#", "Source", "Folder", "Machine", "Commit", "Date", "Steady s/epoch", "Images/s (steady)",
                  f"Val acc @ epoch {final}", "Against the machine's previous point"], rows, "history")


def config_page(conf: Configuration, shown: list[str]) -> str:
    n = len(conf.points)
    body = [f"<p>{esc(NOTE)} Cells: median [interquartile range] n; steady seconds and images per second over "
            "every steady epoch of the point's runs, accuracy one sample per run. The last column is compare's rule "
            "(tlbench compare) between consecutive points of one machine: hover it for why.</p>",
            "<h2>History</h2>", history(conf)]
    history_figure = [p for p in shown if p.endswith("-history.png")]
    body.append(figures(history_figure, f"The {n} points of the table above.") if history_figure else
                "<p>One point: the history begins here.</p>")
    machines = conf.machines()
    side = [p for p in shown if "-machines-" in p]
    if side:
        body += ["<h2>Machines side by side</h2>",
                 figures(side, "The current records of " + ", ".join(map(esc, machines)) + ", as "
                         "<code>tlbench plot A B --label</code> draws them.")]
    body += ['<h2>Records</h2>']
    for i, p in enumerate(conf.points, 1):
        body += [f'<h3 id="point-{i}">Point {i}: {esc(p.source)}, {esc(p.machine)}, commit {esc(p.commit)}</h3>',
                 records_table(p.entries)]
    body += ["<h2>Configuration</h2>", f"<pre>{esc(conf.key)}</pre>"]
    return page(conf.label, body)


def pages(site: Site, shown: dict[str, list[str]]) -> dict[str, str]:
    """file name -> its text, every page of the site and the stylesheet."""
    out = {"style.css": STYLE, "index.html": index(site, shown)}
    out.update({s.page: suite_page(site, s, shown[s.page]) for s in site.suites})
    out.update({c.page: config_page(c, shown[c.page]) for c in site.configs.values()})
    return out
