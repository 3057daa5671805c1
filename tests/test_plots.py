"""The notebooks' figures: each function draws from what its notebook holds and writes one PNG."""

import json

import matplotlib.image
import numpy as np
import pytest

from usdrl import plots


def _image(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, path
    return image


def test_every_figure_is_written_under_its_name_and_nothing_else_beside_it(tmp_path):
    history = [{"epoch": epoch, "total": 3.0 / epoch, "similarity": 1.0, "variance_covariance": 2.0,
                "cross_correlation": 4.0} for epoch in (1, 2, 3)]
    probes = {}
    for name, accuracy in (("pretrained", 0.8), ("random init", 0.3)):
        probes[name] = tmp_path / f"{name}.json"
        probes[name].write_text(json.dumps({"metrics": {"history": [{"epoch": e, "test_accuracy": accuracy * e / 3}
                                                                    for e in (1, 2, 3)]}}))
    rows = [{"labels": label, "encoder": encoder, "top1": top1}
            for label, encoder, top1 in (("1%", "pretrained", 0.5), ("1%", "random init", 0.2),
                                         ("10%", "pretrained", 0.7), ("10%", "random init", 0.3))]
    figures = tmp_path / "figures"
    written = [
        plots.plot_loss_curves(history, figures / "loss.png", "loss"),
        plots.plot_probe_curves(probes, figures / "linear.png", "run"),
        plots.plot_semi_supervised(rows, figures / "semi.png", "run"),
        plots.plot_retrieval({"pretrained": {"knn1": 0.6, "knn5": 0.7}, "random": {"knn1": 0.2, "knn5": 0.3}},
                             figures / "retrieval.png", "run"),
        plots.plot_alpha_curve([0.0, 0.5, 1.0], [0.5, 0.7, 0.6], [0.4, 0.6, 0.5], figures / "alpha.png", "alpha"),
    ]
    assert written == [figures / name for name in ("loss.png", "linear.png", "semi.png", "retrieval.png", "alpha.png")]
    for path in written:
        _image(path)
    assert sorted(path.name for path in figures.iterdir()) == sorted(path.name for path in written)  # no temporaries
    copied = plots.copy_figure(written[0], tmp_path / "elsewhere" / "copy.png")
    assert copied.read_bytes() == written[0].read_bytes()


def test_one_subsample_serves_every_encoder_and_method():
    chosen = plots.subsample_positions(500, 120)
    assert np.array_equal(chosen, np.random.default_rng(0).permutation(500)[:120])  # notebook 07's draw
    assert np.array_equal(plots.subsample_positions(50, 120), np.random.default_rng(0).permutation(50))  # all of them


@pytest.mark.slow
def test_feature_maps_are_two_dimensional_and_drawn_side_by_side(tmp_path):
    features = np.random.default_rng(1).normal(size=(40, 8)).astype(np.float32)
    labels = np.arange(40) % 4
    points = plots.embed_in_plane(features, "tsne")
    assert points.shape == (40, 2)
    assert np.array_equal(points, plots.embed_in_plane(features, "tsne"))  # seeded
    with pytest.raises(ValueError, match="tsne, umap"):
        plots.embed_in_plane(features, "pca")
    path = plots.plot_embeddings({"pretrained": points, "random init": points[::-1].copy()}, labels,
                                 [f"class {i}" for i in range(4)], "tsne", tmp_path / "tsne_run.png", "run")
    assert _image(path).shape[1] > 2 * _image(path).shape[0]  # two maps and a legend side by side


@pytest.mark.slow
def test_umap_compiled_functions_are_cached_on_disk_and_give_the_same_map(tmp_path):
    import subprocess
    import sys

    script = ("import sys, numpy as np, umap; from usdrl import plots\n"
              "x = np.random.default_rng(0).normal(size=(120, 16)).astype(np.float32)\n"
              "switched = plots.cache_compiled_umap() if sys.argv[1] == 'cache' else 0\n"
              "assert sys.argv[1] != 'cache' or plots.cache_compiled_umap() == 0  # once per process\n"
              "np.save(sys.argv[2], umap.UMAP(n_neighbors=15, random_state=0).fit_transform(x))\n"
              "from numba.core.dispatcher import Dispatcher\n"
              "hits = sum(sum(value.stats.cache_hits.values()) for name, module in list(sys.modules.items())\n"
              "           if module and name.split('.')[0] in ('umap', 'pynndescent') for value in vars(module).values()\n"
              "           if isinstance(value, Dispatcher))\n"
              "print(switched, hits)")
    maps, hits = {}, {}
    # fresh processes (numba state of this one does not matter): no cache, a cache written, the cache read
    for mode, cache in (("plain", "plain"), ("written", "cache"), ("read", "cache")):
        done = subprocess.run([sys.executable, "-c", script, cache, str(tmp_path / mode)], capture_output=True,
                              text=True, env={**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")})
        assert done.returncode == 0, done.stderr
        maps[mode] = np.load(tmp_path / f"{mode}.npy")
        switched, hits[mode] = (int(word) for word in done.stdout.split()[-2:])
        if cache == "cache":
            assert switched > 100  # umap-learn and pynndescent: about 250 functions
    assert hits["plain"] == 0 and hits["read"] > 50, hits  # the third process loaded compiled code from disk
    assert np.array_equal(maps["plain"], maps["written"]) and np.array_equal(maps["plain"], maps["read"])
