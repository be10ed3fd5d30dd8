from typer.testing import CliRunner

from spacy_el.cli import app
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.pairs import read_pairs

runner = CliRunner()


def test_make_pairs_then_pretrain(tmp_path, tiny_bert_dir):
    kb = tmp_path / "medic.txt"
    kb.write_text("D003924||Diabetes Mellitus, Type 2|NIDDM|Type 2 Diabetes\nC567755|613097||STHAG6\n")
    out = tmp_path / "pairs.tsv"
    res = runner.invoke(app, ["make-pairs", str(kb), str(out), "--format", "medic", "--max-pairs", "2"])
    assert res.exit_code == 0, res.output
    pairs = read_pairs(out)
    assert len(pairs) == 3 and ("MESH:C567755|OMIM:613097", "STHAG6", "STHAG6") in pairs

    res = runner.invoke(app, ["pretrain", str(out), str(tmp_path / "run"), "--base", str(tiny_bert_dir),
                              "--max-steps", "2", "--batch-size", "2", "--pooling", "mean", "--num-threads", "1",
                              "--batching", "neighbours"])
    assert res.exit_code == 0, res.output
    assert "Trained 2 steps" in res.output
    assert SapEncoder.load(tmp_path / "run" / "encoder").settings.pooling == "mean"


def test_bad_input_is_a_clean_error(tmp_path):
    bad = tmp_path / "pairs.tsv"
    bad.write_text("D1\tonly two\n")
    res = runner.invoke(app, ["pretrain", str(bad), str(tmp_path / "run")])
    assert res.exit_code == 1 and "line 1" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["make-pairs", str(tmp_path / "kb.dat"), str(tmp_path / "p.tsv")])
    assert res.exit_code == 1 and "--format" in res.output


def test_export_onnx_then_build_index_with_it(tmp_path, tiny_bert_dir):
    from spacy_el.sap.encoders import load_encoder
    from spacy_el.sap.onnx import OnnxEncoder

    res = runner.invoke(app, ["export-onnx", str(tiny_bert_dir), str(tmp_path / "onnx"), "--quantize"])
    assert res.exit_code == 0, res.output
    assert "int8" in res.output and isinstance(load_encoder(tmp_path / "onnx"), OnnxEncoder)
    kb = tmp_path / "kb.tsv"
    kb.write_text("MESH:D003924\tdiabetes\nMESH:D009369\tcancer\n")
    res = runner.invoke(app, ["build-index", str(kb), str(tmp_path / "onnx"), str(tmp_path / "index"), "--format", "tsv"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["pretrain", "x.tsv", str(tmp_path / "run"), "--loss", "hinge"])
    assert res.exit_code == 1 and "loss='hinge'" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["export-onnx", str(tmp_path / "missing"), str(tmp_path / "o2")])
    assert res.exit_code == 1 and "Traceback" not in res.output
