"""Streaming stores: Apache Kafka and the embedded SQLite log."""
