"""displaCy for linked entities: each entity is labelled `LABEL · concept_id name`, coloured by
its NER label, so a reader sees at a glance what the linker chose."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from spacy import displacy
from spacy.tokens import Doc

from spacy_el.io import atomic_write

#: displaCy's palette is keyed by label; ours are composed per entity, so colour by NER label.
PALETTE = ["#7aecec", "#feca74", "#aa9cfc", "#bfe1d9", "#ff9561", "#c887fb", "#9cc9cc", "#e4e7d2"]


def link_label(ent) -> str:
    """`Disease · MESH:D003920 diabetes mellitus` (the id and best name, when linked)."""
    cands = ent._.kb_candidates or []
    name = cands[0].name if cands and cands[0].concept_id == ent.kb_id_ else ""
    return " · ".join(p for p in (ent.label_, f"{ent.kb_id_} {name}".strip()) if p)


def render_links(docs: Iterable[Doc], *, page: bool = True) -> str:
    """HTML of the docs with their linked entities (displaCy's `ent` style, manual mode)."""
    docs = list(docs)
    labels = list(dict.fromkeys(e.label_ for d in docs for e in d.ents))
    colour_of = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    parsed, colors = [], {}
    for doc in docs:
        ents = []
        for ent in doc.ents:
            label = link_label(ent)
            colors[label] = colour_of[ent.label_]
            ents.append({"start": ent.start_char, "end": ent.end_char, "label": label})
        parsed.append({"text": doc.text, "ents": ents, "title": None})
    return displacy.render(parsed, style="ent", manual=True, page=page, jupyter=False,
                           options={"colors": colors})


def write_html(docs: Iterable[Doc], path: str | Path) -> Path:
    """Write a standalone HTML page of `render_links(docs)` atomically."""
    path = Path(path)
    with atomic_write(path) as f:
        f.write(render_links(docs, page=True))
    return path
