"""evaluate_linking's protocol: composite parts, ids in any spelling, and short forms linked by
their long form when asked (`--resolve-abbreviations`)."""
import numpy as np

from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.linker.link import evaluate_linking

KB = [("MESH:D011125", "familial adenomatous polyposis"), ("MESH:D000001", "fap"),
      ("MESH:D003920", "diabetes mellitus")]


class ExactEncoder:
    """One-hot vectors by lower-cased exact name: the test sees the protocol, not a model."""

    dim, fingerprint = len(KB) + 1, "exact"

    def __init__(self):
        self.seen: list[str] = []

    def embed(self, texts, batch_size: int = 256):
        self.seen += list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            j = next((k for k, (_, name) in enumerate(KB) if name == text.lower()), len(KB))
            out[i, j] = 1.0
        return out


def test_short_forms_are_linked_by_their_long_form(tmp_path):
    title = "Familial adenomatous polyposis (FAP) in two families."
    abstract = "FAP patients and diabetes mellitus patients were seen."
    a = len(title) + 1
    path = tmp_path / "dev.PubTator"
    path.write_text("\n".join([
        f"1|t|{title}", f"1|a|{abstract}",
        "1\t0\t30\tFamilial adenomatous polyposis\tDisease\tD011125",
        "1\t32\t35\tFAP\tDisease\tD011125",
        f"1\t{a}\t{a + 3}\tFAP\tDisease\tD011125",
        f"1\t{a + 17}\t{a + 34}\tdiabetes mellitus\tDisease\tMESH:D003920", ""]) + "\n")
    encoder = ExactEncoder()
    index = ConceptIndex.from_vectors(ConceptTable.from_rows(KB), encoder.embed([n for _, n in KB]))
    plain = evaluate_linking(path, encoder, index)
    assert plain["n"] == 4 and plain["acc@1"] == 50.0 and plain["n_abbreviations_resolved"] == 0
    resolved = evaluate_linking(path, encoder, index, resolve_abbreviations=True)
    assert resolved["acc@1"] == 100.0 and resolved["n_abbreviations_resolved"] == 2
    assert "FAP" not in encoder.seen[-3:]
