import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from devcert_harness import Broker, Pki  # noqa: E402


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """One PKI per test file run: minting keys is the slow part."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def make_broker(tmp_path, pki):
    """Builds brokers on demand and stops each one, asserting a clean exit."""
    brokers = []

    def make(**kw):
        b = Broker(tmp_path / f"broker{len(brokers)}", pki, **kw)
        brokers.append(b)
        return b

    yield make
    for b in brokers:
        b.stop()


@pytest.fixture
def broker(make_broker):
    return make_broker().start()


@pytest.fixture
def admin_broker(make_broker):
    """A broker with its admin socket, so that tests can read its counters
    through GetStats (broker.counters())."""
    return make_broker(admin_socket=True).start()
