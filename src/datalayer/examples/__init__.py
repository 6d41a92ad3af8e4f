"""The alerting domain used by the example registry, the quickstart and the tests."""
