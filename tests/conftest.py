"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent) and small pipelines."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data {path} is absent (../shared/data is not checked out beside the repo)")
    return path


@pytest.fixture(scope="session")
def pile_dir() -> Path:
    return shared_file("pile")


@pytest.fixture(scope="session")
def commoncrawl_dir() -> Path:
    return shared_file("commoncrawl")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline demo corpus, made once per session."""
    from tokenmill.sample_data import make_sample_data

    directory = tmp_path_factory.mktemp("sample")
    make_sample_data(directory)
    return directory


@pytest.fixture(scope="session")
def client():
    """One real LocalCluster (2 worker processes) shared by executor tests."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c
