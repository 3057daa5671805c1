"""The one reader of a pretraining run's record (run.json): a missing, damaged or non-object file is named."""

import json

import pytest

from usdrl.training.loop import TrainingError
from usdrl.training.run_record import RUN_RECORD_FILE, is_run_record, read_run_record, run_record_path


def test_a_good_record_is_read_as_written(tmp_path):
    record = {"data": {"benchmark": "xview"}, "model": {"backbone": "dste"}, "pretrain": {"epochs": 2}}
    (tmp_path / RUN_RECORD_FILE).write_text(json.dumps(record))
    assert run_record_path(tmp_path) == tmp_path / "run.json"
    assert read_run_record(tmp_path) == record and read_run_record(tmp_path, missing_ok=True) == record
    assert is_run_record(record) and not is_run_record({"model": {}}) and not is_run_record([1])


def test_a_missing_record_is_none_when_allowed_and_named_otherwise(tmp_path):
    assert read_run_record(tmp_path / "absent", missing_ok=True) is None
    with pytest.raises(TrainingError, match=r"absent/run.json is missing: .*absent is not a run folder of usdrl "
                                            r"pretrain; pass the --out folder of a pretraining run"):
        read_run_record(tmp_path / "absent")


@pytest.mark.parametrize("content", ["not json", '{"data": ', b"\xff\xfe"])
def test_a_damaged_record_is_named_with_what_to_do(tmp_path, content):
    path = tmp_path / RUN_RECORD_FILE
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for missing_ok in (False, True):  # a damaged record is never taken for a missing one
        with pytest.raises(TrainingError, match=r"run.json cannot be read \((JSONDecodeError|UnicodeDecodeError): "
                                                r".*\); it is the record usdrl pretrain writes of a run: pretrain "
                                                r"again into a new --out"):
            read_run_record(tmp_path, missing_ok=missing_ok)


def test_a_folder_in_place_of_the_record_is_named(tmp_path):
    (tmp_path / RUN_RECORD_FILE).mkdir()
    with pytest.raises(TrainingError, match=r"run.json cannot be read \(IsADirectoryError"):
        read_run_record(tmp_path, missing_ok=True)


@pytest.mark.parametrize("content, kind", [([1, 2], "list"), ("text", "str"), (None, "NoneType"), (3, "int")])
def test_a_record_that_is_no_object_is_named(tmp_path, content, kind):
    (tmp_path / RUN_RECORD_FILE).write_text(json.dumps(content))
    with pytest.raises(TrainingError, match=rf"run.json holds {kind}, not the record of a run; .*pretrain again "
                                            rf"into a new --out"):
        read_run_record(tmp_path)
