"""Real servers for tests and development: PostgreSQL, Redis, Apache Kafka and a MongoDB-protocol server.

``python -m tests.services up|down|env|status`` (or ``scripts/services``) starts them on
127.0.0.1 with free ports and prints the ``DATALAYER_*`` URLs; the pytest fixtures use the same
launcher. For each server it takes, in order: a URL already in the environment; a container
(testcontainers, official images) where a Docker engine answers; a local process.
"""
