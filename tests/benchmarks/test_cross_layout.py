"""benchmarks/cross_layout.py: seeds run by separate starts merge into one results file, mean ± std per row."""

import json
import sys

from conftest import REPOSITORY

sys.path.insert(0, str(REPOSITORY / "benchmarks"))
import cross_layout  # noqa: E402


def _results(path, rows, seconds):
    path.write_text(json.dumps({"benchmark": "cross_layout", "work": path.parent.name, "rows": rows,
                                "seconds": seconds}))
    return path


def test_merged_seeds_give_the_mean_and_population_std(tmp_path, capsys):
    first = _results(tmp_path / "a.json", {"random_init_native": {"0": {"probe_top1": 0.8, "knn1": 0.7},
                                                                  "1": {"probe_top1": 0.9, "knn1": 0.7}}},
                     {"random_init_native_seed0": 3.0})
    second = _results(tmp_path / "b.json", {"random_init_native": {"2": {"probe_top1": 0.7, "knn1": 0.7}},
                                            "utkinect_native_pretrained": {"2": {"probe_top1": 0.88, "knn1": 0.9}}},
                      {"utkinect_native_pretrained_seed2": 900.0})
    cross_layout.merge([first, second], tmp_path / "merged.json")
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["seeds"] == [0, 1, 2] and sorted(merged["rows"]["random_init_native"]) == ["0", "1", "2"]
    probe = merged["summary"]["random_init_native"]["probe_top1"]
    assert abs(probe["mean"] - 0.8) < 1e-9 and abs(probe["std"] - (0.02 / 3) ** 0.5) < 1e-9 and probe["n"] == 3
    assert merged["seconds"] == {"random_init_native_seed0": 3.0, "utkinect_native_pretrained_seed2": 900.0}
    printed = capsys.readouterr().out
    assert "| random init, native UTKinect | 80.0 ± 8.2 | 70.0 ± 0.0 | 0, 1, 2 |" in printed
    assert "| UTKinect-native pretrained (kinect_v1) | 88.0 ± 0.0 | 90.0 ± 0.0 | 2 |" in printed
