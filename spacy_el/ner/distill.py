"""Teacher targets: a trained tagger's CRF distribution over each training doc, stored in the doc.

An ensemble of taggers (`spacy-el ensemble-ner`, a transformer-fed member among BiLSTMs) tags
better than any one BiLSTM but runs at a fraction of its speed. Distillation keeps the speed:
`write_teacher_targets` runs the teacher over a training DocBin and stores, in each doc's
`user_data`, its CRF's tag marginals and expected transition counts (what
`spacy_el.ner.crf.crf_loss` distils from); `spacy train` on that DocBin then trains a
`bilstm_ner` on the gold and on the teacher's distribution, mixed by its `teacher_weight`.
A teacher scored on its own training data is nearly certain everywhere (an ensemble trained on
CoNLL-2003 gives the gold tag 0.998 on average), so the targets can be softened by a
`temperature` (all CRF scores divided by it; the student's loss divides its own alike).
The teacher sees the training docs' own tokens, so targets and tokens line up one to one.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Optional

from spacy_el.io import InputError
from spacy_el.ner.crf import teacher_targets

#: `doc.user_data` key of a doc's teacher targets: {"tags", "marginals", "transitions", "temperature"}.
TEACHER_KEY = "spacy_el.teacher"


def tagger_inputs(nlp, docs, component: str = "bilstm_ner", batch_size: int = 64) -> list:
    """New docs with the words of `docs`, through `nlp`'s components before `component` (its
    transformer, gazetteers): what the tagger reads on these tokens, gold annotations left out."""
    from spacy.tokens import Doc

    inputs = [Doc(nlp.vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d]) for d in docs]
    for name in nlp.pipe_names[: nlp.pipe_names.index(component)]:
        inputs = list(nlp.get_pipe(name).pipe(inputs, batch_size=batch_size))
    return inputs


def write_teacher_targets(teacher_dir: Path, docbin_path: Path, output_path: Path, *,
                          component: str = "bilstm_ner", batch_size: int = 64, temperature: float = 1.0,
                          progress: Optional[Callable[[int], None]] = None) -> int:
    """Write to `output_path` the docs of `docbin_path` with `teacher_dir`'s targets in their
    `user_data`; returns the number of docs. The teacher runs its own components up to
    `component` (transformer, gazetteers) on each doc's words, as it would on raw text with the
    same tokens. Written to a `.partial` file first, then moved in place."""
    import spacy
    from spacy.tokens import DocBin

    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature} (--temperature)")
    if not (Path(teacher_dir) / "config.cfg").exists():
        raise InputError(f"{teacher_dir}: not a spaCy pipeline directory (no config.cfg); give e.g. a "
                         "training run's model-best")
    if not Path(docbin_path).is_file():
        raise InputError(f"{docbin_path}: no such DocBin (a .spacy file from `spacy-el convert-ner`)")
    nlp = spacy.load(teacher_dir)
    if component not in nlp.pipe_names:
        raise InputError(f"{teacher_dir}: no component {component!r} (has {nlp.pipe_names}); set --component")
    pipe = nlp.get_pipe(component)
    if not pipe.has_crf:
        raise InputError(f"{teacher_dir}: {component!r} has no CRF (crf = false); a teacher must be a CRF tagger")
    docs = list(DocBin().from_disk(docbin_path).get_docs(nlp.vocab))
    start, trans, end = pipe.crf_scores()
    tags = list(pipe.tags)
    out = DocBin(store_user_data=True)
    for i in range(0, len(docs), batch_size):
        batch = docs[i: i + batch_size]
        inputs = tagger_inputs(nlp, batch, component, batch_size)
        for doc, (marginals, transitions) in zip(batch, teacher_targets(pipe.emissions(inputs), start, trans, end,
                                                                             temperature)):
            doc.user_data[TEACHER_KEY] = {"tags": tags, "marginals": marginals, "transitions": transitions,
                                          "temperature": temperature}
            out.add(doc)
        if progress is not None:
            progress(len(batch))
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    out.to_disk(partial)
    shutil.move(str(partial), str(output_path))
    return len(docs)
