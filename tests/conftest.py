import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # no model hub is reachable: loading must never try the network


# ---------------------------------------------------------------- Ray (sweep tests)
# One shared local Ray per test session: 2 CPUs, no dashboard, a small object store.
# Environment read by Ray's workers (cache folder, quiet flags) is set before it starts.


@pytest.fixture(autouse=True)
def _ray_tests_are_marked(request):
    """A test that asks for the shared Ray carries the ``ray`` marker, so ``-m "not ray"`` really leaves Ray out."""
    if "ray_session" in request.fixturenames and request.node.get_closest_marker("ray") is None:
        pytest.fail(f"{request.node.nodeid} uses ray_session: mark it @pytest.mark.ray")


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    os.environ.setdefault("CBL_CACHE", str(tmp_path_factory.mktemp("cbl_cache")))
    from cbl.sweep import quiet_ray_environment

    quiet_ray_environment()
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=128 * 1024**2,
            logging_level="ERROR",
        )
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------- demo cache (training / evaluation tests)
# Every session generates its tiny demo corpora in its own folder, never in ~/.cache/cbl.


@pytest.fixture(scope="session", autouse=True)
def cbl_cache(tmp_path_factory):
    previous = os.environ.get("CBL_CACHE")
    folder = tmp_path_factory.mktemp("cbl_cache")
    os.environ["CBL_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CBL_CACHE", None)
    else:
        os.environ["CBL_CACHE"] = previous
