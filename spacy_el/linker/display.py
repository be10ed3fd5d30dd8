"""Viewing links: displaCy's entity markup with each concept id as a link to its KB page and the
best KB name and score beside the label, and a standalone page (`spacy-el link --html`) that
adds, per document, a side table of every entity's candidates (name, id, score, source); each
highlighted entity also shows its candidates on hover.

`kb_url_template` maps an id prefix to the URL of a concept page, `{}` standing for the id
without its prefix (`MESH:D003920` → `D003920`); ids of other prefixes get no link.

Every string on the page comes from somewhere else: the text from the input, names, ids and
sources from KB files written by third parties (UMLS releases, ontologies, user TSVs), templates
from the user. So each is HTML-escaped where it is inserted, the id inside a URL is percent-encoded,
and a URL that is not http(s) (e.g. `javascript:`) is not linked: nothing from the KB can add an
element or an attribute to the page. A composite
entity (`ent._.kb_parts`) links its first part in the markup and every part in the table.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import quote, urlsplit
from typing import Any, Dict, Iterable, List, Mapping, Optional

from spacy import displacy
from spacy.tokens import Doc, Span

from spacy_el.io import atomic_write

#: displaCy's palette is keyed by label; ours are composed per entity, so colour by NER label.
PALETTE = ["#7aecec", "#feca74", "#aa9cfc", "#bfe1d9", "#ff9561", "#c887fb", "#9cc9cc", "#e4e7d2"]
#: Concept pages per id prefix (`{}`: the id without its prefix).
KB_URL_TEMPLATES: Dict[str, str] = {
    "MESH": "https://meshb.nlm.nih.gov/record/ui?ui={}",
    "OMIM": "https://omim.org/entry/{}",
    "DOID": "https://disease-ontology.org/?id=DOID:{}",
    "UMLS": "https://uts.nlm.nih.gov/uts/umls/concept/{}",
}


def kb_url(concept_id: str, templates: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The page of the first id of `concept_id` whose prefix has a template, else None. The id is
    percent-encoded into the template, and only http(s) URLs are returned (not HTML-escaped: do
    that where the URL is inserted)."""
    templates = KB_URL_TEMPLATES if templates is None else templates
    for part in concept_id.split("|"):
        prefix, sep, local = part.partition(":")
        if sep and prefix.upper() in templates:
            url = templates[prefix.upper()].replace("{}", quote(local, safe=""))
            return url if urlsplit(url).scheme.lower() in ("http", "https") else None
    return None


def _best(ent: Span):
    cands = ent._.kb_candidates or []
    if getattr(ent._, "kb_parts", None):
        return cands
    return cands[:1] if cands and cands[0].concept_id == ent.kb_id_ else []


def link_label(ent: Span) -> str:
    """`Disease · diabetes mellitus 0.97` (the best name and its cosine, when linked; one per part
    for a composite entity)."""
    best = " + ".join(f"{c.name} {c.score:.2f}" for c in _best(ent))
    return " · ".join(p for p in (ent.label_, best) if p)


def render_links(docs: Iterable[Doc], *, page: bool = True, kb_url_template: Optional[Mapping[str, str]] = None
                 ) -> str:
    """displaCy (`ent` style, manual mode) of the docs: label, best name and score, and the
    concept id as a link to its KB page."""
    docs = list(docs)
    colors = _colors(docs)
    parsed = []
    for doc in docs:
        ents = []
        for ent in doc.ents:
            # displaCy escapes the text but inserts label, id and URL as given
            label = html.escape(link_label(ent))
            colors[label] = colors[ent.label_]
            url = kb_url(ent.kb_id_, kb_url_template) if ent.kb_id_ else None
            ents.append({"start": ent.start_char, "end": ent.end_char, "label": label,
                         "kb_id": html.escape(ent.kb_id_), "kb_url": html.escape(url or "#")})
        parsed.append({"text": doc.text, "ents": ents, "title": None})
    return displacy.render(parsed, style="ent", manual=True, page=page, jupyter=False, options={"colors": colors})


def _colors(docs: List[Doc]) -> Dict[str, str]:
    labels = list(dict.fromkeys(e.label_ for d in docs for e in d.ents))
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def _id_links(concept_id: str, templates: Optional[Mapping[str, str]]) -> str:
    out = []
    for part in concept_id.split("|"):
        url = kb_url(part, templates)
        text = html.escape(part)
        out.append(f'<a href="{html.escape(url)}" target="_blank" rel="noopener">{text}</a>' if url else text)
    return "<wbr>|".join(out)


def _candidate_rows(ent: Span) -> List[tuple[str, List[Any]]]:
    """(heading, candidates): one group per part of a composite entity, else one."""
    parts = getattr(ent._, "kb_parts", None)
    if parts:
        return [(f"part “{text}”", cands) for text, cands in parts]
    return [("", ent._.kb_candidates or [])]


def _hover(ent: Span) -> str:
    lines = []
    for head, cands in _candidate_rows(ent):
        if head:
            lines.append(head)
        lines += [f"{c.score:.3f}  {c.name}  ({c.concept_id}, {c.source})" for c in cands]
    return "\n".join(lines) or "no candidates"


def render_page(docs: Iterable[Doc], *, kb_url_template: Optional[Mapping[str, str]] = None,
                title: str = "spacy-el links") -> str:
    """A standalone HTML page: per document, the displaCy markup (hover an entity for its
    candidates) beside a table of its entities and their candidates."""
    docs = list(docs)
    sections = []
    for d, doc in enumerate(docs):
        markup = render_links([doc], page=False, kb_url_template=kb_url_template)
        marks = iter(enumerate(doc.ents))
        markup = re.sub(r"<mark ", lambda _: _mark_attrs(d, *next(marks)), markup)
        rows = []
        for e, ent in enumerate(doc.ents):
            groups = _candidate_rows(ent)
            cand_html = "".join(
                (f'<div class="part">{html.escape(head)}</div>' if head else "") + "".join(
                    f'<div class="cand{" best" if i == 0 else ""}"><span class="score">{c.score:.3f}</span> '
                    f'{html.escape(c.name)} <span class="cid">{_id_links(c.concept_id, kb_url_template)}</span> '
                    f'<span class="src">{html.escape(c.source)}</span></div>' for i, c in enumerate(cands))
                for head, cands in groups) or '<div class="cand none">no candidates</div>'
            linked = ent.kb_id_ and ent.kb_id_ not in ("NIL", "")
            rows.append(
                f'<tr id="ent-{d}-{e}"><td class="mention">{html.escape(ent.text)}'
                f'<div class="label">{html.escape(ent.label_)}</div></td>'
                f'<td class="kb">{_id_links(ent.kb_id_, kb_url_template) if linked else "<span class=nil>NIL</span>"}'
                f"</td><td>{cand_html}</td></tr>")
        table = ("<table><thead><tr><th>entity</th><th>linked to</th><th>candidates (cosine, name, id, source)</th>"
                 f"</tr></thead><tbody>{''.join(rows)}</tbody></table>" if rows else
                 '<p class="empty">no entities</p>')
        sections.append(f'<section><h2>Document {d + 1}</h2><div class="cols"><div class="text">{markup}</div>'
                        f'<div class="side">{table}</div></div></section>')
    return _PAGE.format(title=html.escape(title), body="".join(sections) or '<p class="empty">no documents</p>')


def _mark_attrs(d: int, e: int, ent: Span) -> str:
    return f'<mark title="{html.escape(_hover(ent))}" data-ent="ent-{d}-{e}" '


def write_html(docs: Iterable[Doc], path: str | Path, *, kb_url_template: Optional[Mapping[str, str]] = None) -> Path:
    """Write `render_page(docs)` to `path` atomically."""
    path = Path(path)
    with atomic_write(path) as f:
        f.write(render_page(docs, kb_url_template=kb_url_template))
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0; background: #f6f7f9;
       color: #1f2430; }}
header {{ background: #1f2430; color: #fff; padding: 14px 28px; font-size: 18px; font-weight: 600; }}
section {{ background: #fff; margin: 18px 24px; padding: 6px 22px 18px; border-radius: 8px;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }}
h2 {{ font-size: 15px; color: #5a6275; font-weight: 600; margin: 12px 0 4px; }}
.cols {{ display: flex; gap: 24px; align-items: flex-start; }}
.text {{ flex: 1 1 52%; min-width: 0; }}
.text .entities {{ line-height: 2.4 !important; font-size: 15px; }}
.text mark {{ cursor: help; }}
.side {{ flex: 1 1 48%; min-width: 0; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
th {{ text-align: left; color: #5a6275; font-weight: 600; border-bottom: 2px solid #e3e6ec; padding: 6px 8px; }}
td {{ vertical-align: top; border-bottom: 1px solid #eef0f4; padding: 6px 8px; }}
td.mention {{ font-weight: 600; }}
.label {{ font-weight: 400; font-size: 11px; color: #7a8296; text-transform: uppercase; letter-spacing: .04em; }}
.cand {{ color: #5a6275; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 430px; }}
.cand.best {{ color: #1f2430; font-weight: 600; }}
.score {{ display: inline-block; min-width: 42px; font-variant-numeric: tabular-nums; color: #2f6fdf; }}
.cid, .src {{ font-size: 11px; color: #8a91a3; }}
.src {{ background: #eef0f4; border-radius: 3px; padding: 0 4px; }}
.part {{ font-size: 11px; color: #7a8296; margin-top: 4px; font-style: italic; }}
.nil {{ color: #c0392b; font-weight: 600; }}
a {{ color: #2f6fdf; text-decoration: none; }} a:hover {{ text-decoration: underline; }}
.empty {{ color: #8a91a3; }}
</style></head>
<body><header>{title}</header>{body}</body></html>
"""
