"""``kafka``: the streaming contract on Apache Kafka (confluent-kafka).

Publishing is idempotent (``enable.idempotence``, ``acks=all``) and returns once every message
of the batch is acknowledged by the broker; a publisher instead leaves messages in librdkafka's
queue (bounded by ``queue.buffering.max.messages``: a full queue makes the caller wait) and
waits once, on flush. Partitions follow the embedded log's CRC32 rule, so a key lands on the
same partition number on both: chosen here, or for publishers by librdkafka's
``consistent_random`` partitioner, which is the same rule for every key but the empty one.
Consumers commit manually, only past acknowledged messages (the contract's tracker decides what
to commit).

``config`` holds the settings, error classification and topic administration; ``producer``
and ``consumer`` the two halves of the data path; ``store`` puts them behind the contract's
``StreamBackend``.
"""
