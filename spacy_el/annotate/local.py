"""The local engine of `spacy-el annotate`: `nlp.pipe` in this process (`n_process` > 1 forks
spaCy's workers), each shard written as soon as `nlp.pipe` has passed its last document."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

from spacy_el.annotate.shards import AnnotateStats, ShardWriter, entity_rows, progress
from spacy_el.corpora.documents import InputDoc, Item, check_bad, too_long


def pending_records(records: Iterable[tuple[int, Item]], shard_size: int, done: set[int], stats: AnnotateStats
             ) -> Iterator[tuple[int, Item]]:
    """(shard, item) for the records of unfinished shards; counts the skipped shards."""
    skipped: set[int] = set()
    for record, item in records:
        shard = record // shard_size
        if shard in done:
            skipped.add(shard)
        else:
            yield shard, item
    stats.n_shards_skipped = len(skipped)


def run_local(pipeline: str | Path, pending: Iterator[tuple[int, Item]], output: Path,
               stats: AnnotateStats, *, n_process: int, batch_size: int, skip_bad: bool, pubtator: bool,
               show_progress: bool) -> None:
    import spacy

    nlp = spacy.load(pipeline)
    writer = ShardWriter(output, pubtator, stats)
    seen: list[int] = []  # shards in input order, as the reader reaches them (ahead of nlp.pipe)

    def documents() -> Iterator[tuple[str, tuple[int, InputDoc]]]:
        for shard, item in pending:
            if not seen or seen[-1] != shard:
                seen.append(shard)
            if isinstance(item, str):
                check_bad(item, skip_bad, stats.bad)
            elif item is not None and (problem := too_long(item, nlp.max_length)):
                check_bad(problem, skip_bad, stats.bad)
            elif item is not None:
                yield item.text, (shard, item)

    def close_before(shard: Optional[int]) -> None:
        """nlp.pipe keeps the order: every shard before `shard` is complete (even one without documents)."""
        while seen and (shard is None or seen[0] < shard):
            writer.close_shard(seen.pop(0))

    with progress(show_progress) as bar:
        for sdoc, (shard, doc) in nlp.pipe(documents(), as_tuples=True, n_process=n_process, batch_size=batch_size):
            close_before(shard)
            writer.add(shard, doc, entity_rows(doc.id, sdoc))
            bar.update(1)
        close_before(None)
