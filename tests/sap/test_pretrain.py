import os
import socket

import numpy as np
import pytest
import torch

from spacy_el.io import InputError
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.pairs import write_pairs
from spacy_el.sap.config import TrainConfig
from spacy_el.sap.pretrain import neighbour_batches, pretrain, random_batches
from spacy_el.sap.train import CHECKPOINT, ENCODER, PairLoss, SynonymPair, train_encoder

PAIRS = [(f"C{i}", f"disease number {i} type {w}", f"{w} syndrome {i}") for i in range(40) for w in ("alpha", "beta")]


@pytest.fixture
def pairs_file(tmp_path):
    write_pairs(tmp_path / "pairs.tsv", PAIRS)
    return tmp_path / "pairs.tsv"


def full_loss(encoder: SapEncoder) -> float:
    encoder.model.eval()
    with torch.no_grad():
        return float(PairLoss(TrainConfig())(encoder, [SynonymPair(*p) for p in PAIRS]))


def test_few_steps_lower_the_loss(tiny_bert_dir, pairs_file, tmp_path):
    before = full_loss(SapEncoder.load(tiny_bert_dir, pooling="mean"))
    result = pretrain(pairs_file, tmp_path / "run", base=tiny_bert_dir, batch_size=16,
                      config=TrainConfig(epochs=2, lr=5e-3, checkpoint_every=0),
                      encoder_options={"pooling": "mean"}, show_progress=False)
    assert result.steps == 10 and len(result.losses) == 10
    trained = SapEncoder.load(result.encoder_dir)
    assert trained.settings.pooling == "mean"
    assert full_loss(trained) < 0.5 * before
    assert (tmp_path / "run" / CHECKPOINT / "state.pt").exists()


def test_max_steps(tiny_bert_dir, pairs_file, tmp_path):
    result = pretrain(pairs_file, tmp_path / "run", base=tiny_bert_dir, batch_size=8,
                      config=TrainConfig(epochs=5, max_steps=3), show_progress=False)
    assert result.steps == 3


def _train(tiny_bert_dir, out, resume=False):
    encoder = SapEncoder.load(tiny_bert_dir, pooling="mean")
    factory = random_batches([SynonymPair(*p) for p in PAIRS], batch_size=16, seed=3)
    config = TrainConfig(epochs=2, lr=1e-3, checkpoint_every=3, seed=3)
    return encoder, train_encoder(encoder, factory, config, out, resume=resume, show_progress=False)


def test_resume_after_interruption_equals_uninterrupted_run(tiny_bert_dir, tmp_path, interrupt_at_call):
    straight, straight_result = _train(tiny_bert_dir, tmp_path / "straight")

    with interrupt_at_call(PairLoss, 8):  # steps 1-7 ran, the last checkpoint is step 6 (in epoch 2)
        _train(tiny_bert_dir, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / ENCODER).exists()

    resumed, resumed_result = _train(tiny_bert_dir, tmp_path / "resumed", resume=True)
    assert resumed_result.steps == straight_result.steps == 10
    assert resumed_result.losses == straight_result.losses
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert SapEncoder.load(tmp_path / "resumed" / ENCODER).fingerprint == straight.fingerprint


def test_empty_batches_error(tiny_bert_dir, tmp_path):
    encoder = SapEncoder.load(tiny_bert_dir)
    with pytest.raises(InputError, match="no batches"):
        train_encoder(encoder, lambda epoch, enc: [], TrainConfig(), tmp_path / "run", show_progress=False)


def test_hard_negatives_join_the_batch(tiny_bert_dir):
    encoder = SapEncoder.load(tiny_bert_dir, pooling="mean")
    seen = []
    encoder.model.register_forward_hook(lambda m, args, kw, out: seen.append(kw["input_ids"].shape[0]),
                                        with_kwargs=True)
    batch = [SynonymPair("C1", "a b", "c d", negatives=(("C2", "a b c"), ("C3", "d")))]
    loss = PairLoss(TrainConfig())(encoder, batch)
    assert seen == [4] and loss.requires_grad


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    encoder = SapEncoder.load(model_dir, pooling="mean", device="cpu")
    factory = random_batches([SynonymPair(*p) for p in PAIRS], batch_size=8)
    result = train_encoder(encoder, factory, TrainConfig(max_steps=3, lr=1e-3, checkpoint_every=2), out,
                           show_progress=False)
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(f"{encoder.fingerprint}\t{result.steps}\t{result.losses[0]}\t{dist.get_backend()}\n")
    dist.destroy_process_group()


def test_ddp_two_cpu_processes_on_gloo(tiny_bert_dir, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "ddp"
    out.mkdir()
    initial = SapEncoder.load(tiny_bert_dir, pooling="mean").fingerprint
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_bert_dir), str(out)), nprocs=2, join=True)
    rows = [(out / f"rank{r}.txt").read_text().split("\t") for r in range(2)]
    (fp0, steps0, loss0, backend), (fp1, steps1, loss1, _) = rows
    assert backend.strip() == "gloo" and steps0 == steps1 == "3"
    assert fp0 == fp1 != initial  # gradients were all-reduced: both replicas hold the same weights
    assert loss0 != loss1  # ... trained on different shards of the data
    saved = SapEncoder.load(out / ENCODER)
    assert saved.fingerprint == fp0
    np.testing.assert_allclose(np.linalg.norm(saved.embed(["x"]), axis=1), 1.0, atol=1e-5)


class _FixedVectors:
    """Stands in for the encoder inside the batch factory: concept k's name → a chosen vector."""

    def __init__(self, vectors):
        self.vectors = vectors

    def embed(self, texts):
        return np.stack([self.vectors[t.split()[0]] for t in texts]).astype(np.float32)


def test_neighbour_batches_group_close_concepts():
    rng = np.random.default_rng(0)
    centres = {"A": np.eye(8)[0], "B": np.eye(8)[1]}
    vectors = {}
    examples = []
    for k in range(8):
        key = f"c{k}"
        v = centres["A" if k % 2 else "B"] + 0.05 * rng.standard_normal(8)
        vectors[key] = v / np.linalg.norm(v)
        examples += [SynonymPair(key, f"{key} name {j}", f"{key} other {j}") for j in range(1 + k % 3)]
    factory = neighbour_batches(examples, batch_size=4, seed=1)
    batches = factory(0, _FixedVectors(vectors))
    assert sorted(e for b in batches for e in b) == sorted(examples)  # every pair exactly once
    assert all(len({e.label for e in b}) == len(b) <= 4 for b in batches)  # one pair per concept
    first_round = batches[:2]
    for b in first_round:  # the first round's batches are the two clusters
        assert len({int(e.label[1:]) % 2 for e in b}) == 1
    assert factory(0, _FixedVectors(vectors)) == batches


def test_time_budget_stops_with_a_checkpoint_and_resumes(tiny_bert_dir, pairs_file, tmp_path):
    budget = TrainConfig(epochs=1, max_minutes=1e-9, checkpoint_every=0)
    stopped = pretrain(pairs_file, tmp_path / "run", base=tiny_bert_dir, batch_size=16, config=budget,
                       show_progress=False)
    assert stopped.steps == 0 and (tmp_path / "run" / CHECKPOINT / "state.pt").exists()
    done = pretrain(pairs_file, tmp_path / "run", base=tiny_bert_dir, batch_size=16,
                    config=TrainConfig(epochs=1, checkpoint_every=0), resume=True, show_progress=False)
    assert done.steps == 5


@pytest.mark.parametrize("loss", ["ntxent", "supcon"])
def test_softmax_losses_train_too(tiny_bert_dir, pairs_file, tmp_path, loss):
    ntxent = TrainConfig(loss=loss)
    start = SapEncoder.load(tiny_bert_dir, pooling="mean")
    start.model.eval()
    with torch.no_grad():
        before = float(PairLoss(ntxent)(start, [SynonymPair(*p) for p in PAIRS]))
    result = pretrain(pairs_file, tmp_path / "run", base=tiny_bert_dir, batch_size=16,
                      config=TrainConfig(epochs=2, lr=5e-3, checkpoint_every=0, loss=loss),
                      encoder_options={"pooling": "mean"}, show_progress=False)
    trained = SapEncoder.load(result.encoder_dir)
    trained.model.eval()
    with torch.no_grad():
        after = float(PairLoss(ntxent)(trained, [SynonymPair(*p) for p in PAIRS]))
    assert after < 0.8 * before


def test_supcon_is_ntxent_when_every_text_has_one_positive():
    from pytorch_metric_learning import losses

    torch.manual_seed(0)
    emb, labels = torch.randn(16, 8), torch.arange(8).repeat(2)  # 8 pairs, 8 distinct concepts
    ntxent = losses.NTXentLoss(temperature=0.05)(emb, labels)
    assert float(PairLoss(TrainConfig(loss="supcon")).loss(emb, labels)) == pytest.approx(float(ntxent), rel=1e-5)


def test_unknown_losses_are_refused():
    with pytest.raises(InputError, match="loss='triplet'"):
        TrainConfig(loss="triplet")
