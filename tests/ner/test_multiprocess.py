"""`nlp.pipe(n_process=2)` with an initialized `bilstm_ner` after the parent has already run it
(its torch OpenMP pool is up): the forked workers must finish and find the same entities.

Run in a fresh interpreter with torch's default thread count, because the NER tests' conftest
pins torch to one thread, which hides the hang this guards against (see `spacy_el.models`)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    import spacy
    from spacy.training import Example
    from spacy.util import fix_random_seed

    torch.set_num_threads(2)
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": {
        "@architectures": "spacy_el.BiLSTMTagger.v1", "embed_width": 16, "hidden_width": 16, "depth": 1,
        "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"], "rows": [200, 50, 50, 20],
        "include_static_vectors": False}})
    data = [("Barack Obama visited Paris .", [(0, 12, "PER"), (21, 26, "LOC")]),
            ("Apple opened a store in Berlin .", [(0, 5, "ORG"), (24, 30, "LOC")])]
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in data]
    nlp.initialize(lambda: examples)
    for _ in range(20):
        nlp.update(examples, drop=0.0)
    texts = [t for t, _ in data] * 4
    warm = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    forked = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts, n_process=2, batch_size=2)]
    print(json.dumps({"same": warm == forked, "n": len(forked)}))
""")


def test_bilstm_ner_n_process_2_after_a_warm_pass_finishes_with_the_same_entities():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == '{"same": true, "n": 8}'
