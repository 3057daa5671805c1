"""The results files a notebook writes itself carry the provenance every protocol's results file has."""

import csv
import hashlib
import json

from usdrl.project import pipeline
from usdrl.project.report import LOSS_COLUMNS, pretraining_history, write_pretraining_results, write_with_provenance

RUN = "synthetic_xview_dste_joint"


def _record(epoch: int) -> dict:
    return {"epoch": epoch, "lr": 0.001, "similarity": 0.5 / epoch, "variance_covariance": 30.0 + epoch,
            "cross_correlation": 300.0, "total": 35.25 / epoch, "samples_per_second": 100.0, "seconds": 1.5}


def test_the_pretraining_history_is_the_epoch_records_of_the_log(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [{"epoch": 1, "step": 5, "lr": 0.001, "loss": 36.0}, _record(1), {"epoch": 2, "step": 10, "loss": 20.0},
             _record(2)]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert pretraining_history(log) == [_record(1), _record(2)]


def test_pretraining_results_keep_their_columns_and_gain_provenance(synthetic, tmp_path):
    root = tmp_path / "project"
    checkpoint = pipeline.run_checkpoint(root, RUN)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    history = [_record(1), _record(2)]
    written = write_pretraining_results(root, RUN, history, "demo", synthetic, "xview")
    assert written == {"summary": root / f"results/pretrain/{RUN}.json", "loss": root / f"results/pretrain/loss/{RUN}.csv"}
    text = written["loss"].read_text()
    assert text.startswith("epoch,total,similarity,variance_covariance,cross_correlation\n1,35.25,0.5,31.0,300.0\n")
    assert [row["total"] for row in csv.DictReader(text.splitlines())] == ["35.25", "17.625"]
    summary = json.loads(written["summary"].read_text())
    provenance = summary.pop("provenance")
    assert summary == {"run": RUN, "profile": "demo", "final": history[-1], "epochs": 2, "seconds": 3.0,
                       "checkpoint": f"runs/{RUN}/checkpoints/last.pt"}
    assert set(provenance) == {"checkpoint", "checkpoint_sha256", "data_root", "data_manifest_sha256", "dataset",
                               "benchmark", "samples", "git_revision", "torch"}  # those of usdrl.evaluate.results
    assert provenance["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert provenance["dataset"] == "synthetic" and provenance["samples"] == {"train": 120, "test": 60}
    assert LOSS_COLUMNS[0] == "epoch" and not list(written["loss"].parent.glob("*.tmp*"))


def test_a_notebook_results_file_keeps_its_content_beside_the_provenance(synthetic, tmp_path):
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"weights")
    content = {"run": RUN, "points": 200, "scores": {"pretrained": 0.25}}
    path = write_with_provenance(tmp_path / "results" / "embedding.json", content, checkpoint, synthetic, "xview")
    written = json.loads(path.read_text())
    assert {key: value for key, value in written.items() if key != "provenance"} == content
    assert written["provenance"]["checkpoint"] == str(checkpoint) and written["provenance"]["benchmark"] == "xview"


def test_a_row_on_a_subset_of_a_benchmark_says_so_in_the_row():
    from usdrl.project.report import mark_subsets

    rows = [{"row": "DSTE (joint)", "dataset": "ntu60", "benchmark": "xsub", "samples": "5 / 0", "paper": "78.6"},
            {"row": "DSTE (joint)", "dataset": "ntu60", "benchmark": "xsub", "samples": "40091 / 16487", "paper": "78.6"},
            {"row": "DSTE (joint)", "dataset": "synthetic", "benchmark": "xview", "samples": "960 / 480", "paper": "-"}]
    mark_subsets(rows)
    assert rows[0]["row"] == "DSTE (joint) [subset: 5 of 40,091 training samples]"
    assert rows[0]["paper"] == "(78.6: the benchmark, not comparable)"
    assert rows[1]["row"] == "DSTE (joint)" and rows[1]["paper"] == "78.6"
    assert rows[2]["row"] == "DSTE (joint)"
