import builtins
import collections
import os
import pickle
import subprocess

import numpy as np
import pytest

from usdrl.cli.main import main
from usdrl.data.errors import DataError
from usdrl.data.safe_pickle import load_pickle
from usdrl.data.store import load_split

NAME = "S001C001P001R001A001.skeleton"


class Payload:
    """Unpickling calls ``function(*arguments)``: what a crafted label file does."""

    def __init__(self, function, *arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def _payloads(marker):
    touch = f"open({str(marker)!r}, 'w').close()"
    return [
        (Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        (Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
        (Payload(builtins.exec, touch), "builtins.exec"),
        (Payload(builtins.eval, touch), "builtins.eval"),
        (Payload(builtins.__import__, "os"), "builtins.__import__"),
        (Payload(builtins.getattr, "text", "upper"), "builtins.getattr"),
    ]


def _agcn_folder(folder, train_labels, val_labels=None):
    """An AGCN-layout folder of 2 + 1 samples whose label pickles hold the given bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for source, count in (("train", 2), ("val", 1)):
        x = np.zeros((count, 3, 300, 25, 2), dtype=np.float32)
        x[:, :, :10, :, 0] = rng.normal(size=(count, 3, 10, 25))
        np.save(folder / f"{source}_data_joint.npy", x)
    (folder / "train_label.pkl").write_bytes(train_labels)
    (folder / "val_label.pkl").write_bytes(val_labels or pickle.dumps(([NAME], [4])))
    return folder


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("case", range(6))
def test_a_malicious_label_pickle_runs_nothing(tmp_path, capsys, protocol, case):
    marker = tmp_path / "marker"
    payload, refused = _payloads(marker)[case]
    content = pickle.dumps(([NAME, NAME.replace("A001", "A002")], [0, payload]), protocol=protocol)
    folder = _agcn_folder(tmp_path / "xsub", content)
    assert main(["import", "agcn", str(folder), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert str(folder / "train_label.pkl") in error
    assert f"global {refused}" in error  # protocol 2 writes Python 2 names (__builtin__.eval): named as Python 3 reads them
    assert not (tmp_path / "out").exists()


def test_the_payloads_do_run_under_plain_pickle(tmp_path):
    """The test above can fail: the same bytes create the marker when loaded without the allow-list."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_payloads(marker)[2][0]))
    assert marker.exists()


def _python2_pickle(names=(NAME,)):
    """(names, labels, a scalar) as Python 2 wrote it: byte strings, numpy.core names, int64 array [3, 7], 9."""
    data = np.array([3, 7], dtype="<i8").tobytes()
    dtype = b"cnumpy\ndtype\nU\x02i8K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01K\x02\x85"
             + dtype + b"\x89U\x10" + data + b"tb")
    scalar = b"cnumpy.core.multiarray\nscalar\n" + dtype + b"U\x08" + np.int64(9).tobytes() + b"\x86R"
    strings = b"".join(b"U" + bytes([len(name)]) + name.encode() + b"a" for name in names)
    return b"\x80\x02(]" + strings + array + scalar + b"t."


def test_python2_pickles_with_numpy_1_names_load():
    names, labels, scalar = pickle.loads(_python2_pickle(), encoding="latin1")  # what the bytes mean
    assert names == [NAME] and list(labels) == [3, 7] and scalar == 9


def test_load_pickle_reads_plain_and_numpy_content(tmp_path):
    content = {
        "names": ["a", "é"], "labels": np.arange(5, dtype=np.int64), "float": np.float32(1.5), "int": np.int64(3),
        "bytes": b"\x00\xff", "set": {1, 2}, "frozen": frozenset({3}), "nested": [(1, 2.5, None, True)],
        "matrix": np.ones((2, 3), dtype=np.float32), "text": np.array(["ab", "c"]), "complex": 1 + 2j,
        "ordered": collections.OrderedDict(a=1), "objects": np.array([1, "x"], dtype=object),
        "record": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
    }
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"content{protocol}.pkl"
        path.write_bytes(pickle.dumps(content, protocol=protocol))
        loaded = load_pickle(path)
        assert loaded.keys() == content.keys()
        for key, value in content.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(loaded[key], value)
                assert loaded[key].dtype == value.dtype
            else:
                assert loaded[key] == value and type(loaded[key]) is type(value)
    path = tmp_path / "python2.pkl"
    path.write_bytes(_python2_pickle())
    names, labels, scalar = load_pickle(path)
    assert names == [NAME] and list(labels) == [3, 7] and scalar == 9 and isinstance(scalar, np.int64)


def test_load_pickle_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_pickle(tmp_path / "none.pkl")
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps([1, 2, 3])[:-3])
    with pytest.raises(DataError, match=r"cut\.pkl: not a readable pickle"):
        load_pickle(tmp_path / "cut.pkl")
    (tmp_path / "class.pkl").write_bytes(pickle.dumps(collections.Counter("ab")))
    with pytest.raises(DataError, match=r"class\.pkl: refused .* global collections\.Counter,"):
        load_pickle(tmp_path / "class.pkl")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_valid_label_pickles_still_import(tmp_path, protocol):
    names = [NAME, NAME.replace("C001", "C002")]
    variants = {"lists": (names, [0, 5]), "array": (names, np.array([0, 5])),
                "scalars": (names, [np.int64(0), np.int64(5)])}
    for variant, content in variants.items():
        folder = _agcn_folder(tmp_path / variant / "xview", pickle.dumps(content, protocol=protocol))
        assert main(["import", "agcn", str(folder), "--out", str(tmp_path / f"out_{variant}")]) == 0
        assert list(load_split(tmp_path / f"out_{variant}", "xview", "train").label) == [0, 5]
    folder = _agcn_folder(tmp_path / "python2" / "xview", _python2_pickle(names))  # the importer reads names, labels
    assert main(["import", "agcn", str(folder), "--out", str(tmp_path / "out_python2")]) == 0
    split = load_split(tmp_path / "out_python2", "xview", "train")
    assert split.names == names and list(split.label) == [3, 7]
