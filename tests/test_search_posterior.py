"""The typed search posterior: round trip, and clear errors for files that are not one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pyronas.search_posterior import FORMAT, PosteriorFileError, SearchPosterior


def _posterior(**overrides) -> SearchPosterior:
    gen = torch.Generator().manual_seed(0)
    shapes = {"edge_switch": (2, 3), "op_switch": (2, 3, 4)}
    mean = {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    var = {k: torch.rand(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    alive = {k: torch.rand(s, generator=gen) > 0.5 for k, s in shapes.items()}
    kwargs = dict(space="bayesnas8", prior="hard", tied=True, cell_type_index=torch.tensor([0, 1]),
                  num_data=100, mean=mean, var=var, curvature=var, hypers={"gamma": var},
                  alive=alive, history=[{"iteration": 1}])  # fmt: skip
    kwargs.update(overrides)
    return SearchPosterior.from_fit(**kwargs)


def test_round_trip_keeps_every_entry_and_zeroes_pruned_means(tmp_path: Path) -> None:
    post = _posterior()
    for site in ("edge_switch", "op_switch"):
        assert bool((post.mean[site][~post.alive[site]] == 0).all())
    loaded = SearchPosterior.load(post.save(tmp_path / "posterior.pt"))
    assert loaded["format"] == FORMAT
    assert loaded.history == [{"iteration": 1}] and loaded.num_data == 100
    for site in ("edge_switch", "op_switch"):
        assert torch.equal(loaded.mean[site], post.mean[site])
        assert torch.equal(loaded["var"][site], post.var[site])  # the mapping view
    assert set(dict(loaded)) == set(post.to_dict())


def test_truncated_file_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    path = _posterior().save(tmp_path / "posterior.pt")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(PosteriorFileError, match="posterior.pt cannot be read.*--resume"):
        SearchPosterior.load(path)


def test_foreign_dict_and_missing_file_are_refused(tmp_path: Path) -> None:
    torch.save({"format": "something/else"}, tmp_path / "other.pt")
    with pytest.raises(PosteriorFileError, match="format 'something/else'"):
        SearchPosterior.load(tmp_path / "other.pt")
    with pytest.raises(PosteriorFileError, match="does not exist"):
        SearchPosterior.load(tmp_path / "absent.pt")


def test_mismatched_shapes_are_refused() -> None:
    post = _posterior()
    var = dict(post.var, op_switch=torch.ones(2, 3, 5))
    with pytest.raises(PosteriorFileError, match="var of op_switch has shape"):
        SearchPosterior(space="bayesnas8", mean=post.mean, var=var, gamma=post.gamma)
