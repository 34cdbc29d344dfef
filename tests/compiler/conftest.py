"""Private graph folders for every compiler test, as for the graph tests."""

from tests.graph.conftest import _private_graph_dirs, specs_copy  # noqa: F401 - fixtures (one autouse)
