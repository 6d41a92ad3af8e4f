"""Apache Kafka 4.x in KRaft mode (one combined broker and controller) from Maven Central jars."""

from __future__ import annotations

import base64
import shutil
import socket
import uuid
from pathlib import Path
from typing import ClassVar

from tests.services.base import LocalServer, Running
from tests.services.process import ServiceError, free_port, run, spawn, wait_ready

VERSION = "4.1.1"
POM = Path(__file__).with_name("kafka_jars") / "pom.xml"
JAVA_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)
BROKER_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
)
TOOL_OPTS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
LOG4J2 = """\
status = warn
shutdownHook = disable
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = INFO
logger.controller.name = kafka.server.ControllerServer
logger.controller.level = INFO
"""


class KafkaServer(LocalServer):
    """A single-node KRaft cluster; ``stop``/``restart`` keep its ports and data for fault tests.

    With ``advertised_port`` (a port a TCP proxy such as Toxiproxy listens on) the broker's
    client listener, on ``port``, advertises ``127.0.0.1:advertised_port`` instead of itself, so
    clients bootstrapped there keep talking through the proxy (forwarding to ``port``). A third
    listener, on ``direct_port``, advertises itself: the broker's own traffic (inter-broker
    requests such as transaction markers) and ``direct_bootstrap`` bypass the proxy's faults.
    """

    name: ClassVar[str] = "kafka"
    env_var: ClassVar[str] = "DATALAYER_KAFKA_BOOTSTRAP"
    start_timeout: ClassVar[float] = 90.0
    stop_timeout: ClassVar[float] = 30.0

    def __init__(
        self, state_dir: Path, cache_dir: Path, *, advertised_port: int | None = None
    ) -> None:
        super().__init__(state_dir, cache_dir)
        self.libs = self.cache_dir / f"kafka-{VERSION}" / "libs"
        self.config = self.data_dir / "server.properties"
        self.log4j = self.data_dir / "log4j2.properties"
        self.advertised_port = advertised_port
        self.port: int | None = None
        self.controller_port: int | None = None
        self.direct_port: int | None = None

    @property
    def bootstrap(self) -> str:
        """What clients use: the advertised address (the proxy's, when there is one)."""
        if self.port is None:
            raise ServiceError("kafka: not started")
        return f"127.0.0.1:{self.advertised_port or self.port}"

    @property
    def direct_bootstrap(self) -> str:
        """The broker itself, never through a proxy (the same as ``bootstrap`` without one)."""
        if self.port is None:
            raise ServiceError("kafka: not started")
        return f"127.0.0.1:{self.direct_port or self.port}"

    def install(self) -> None:
        """Copy the broker's jars from Maven Central once; a marker says the copy finished."""
        marker = self.libs / ".complete"
        if marker.exists() and any(self.libs.glob("kafka_2.13-*.jar")):
            return
        self.libs.mkdir(parents=True, exist_ok=True)
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-Dkafka.version={VERSION}",
                f"-DoutputDirectory={self.libs}",
            ],
            what="kafka: fetching jars with mvn",
        )
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise ServiceError(f"kafka: mvn copied no kafka_2.13 jar into {self.libs}")
        marker.write_text(VERSION + "\n")

    def start(self) -> Running:
        """Format a fresh KRaft log in ``data_dir`` on new free ports, then start the broker."""
        if self.process is not None and self.process.poll() is None:
            raise ServiceError(f"kafka: already running (pid {self.process.pid})")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        taken = {self.advertised_port}
        self.port = _another_free_port(taken)
        self.controller_port = _another_free_port(taken)
        self.direct_port = None if self.advertised_port is None else _another_free_port(taken)
        self.log4j.write_text(LOG4J2)
        self.config.write_text(self._properties())
        run(
            [
                *self._java(TOOL_OPTS),
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                _cluster_id(),
                "-c",
                str(self.config),
            ],
            what="kafka: formatting storage with kafka.tools.StorageTool",
            timeout=120,
        )
        return self._launch()

    def restart(self) -> Running:
        """Start again on the same ports and data (no format), as after a crash or an outage."""
        if self.port is None or not self.config.exists():
            raise ServiceError("kafka: restart() before start()")
        if self.process is not None and self.process.poll() is None:
            raise ServiceError(f"kafka: still running (pid {self.process.pid})")
        return self._launch()

    @staticmethod
    def check(url: str) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": url, "socket.timeout.ms": 3000, "log_level": 0})
        metadata = admin.list_topics(timeout=3)
        if not metadata.brokers:
            raise ServiceError(f"kafka at {url}: metadata lists no broker")

    def _launch(self) -> Running:
        self.process = spawn([*self._java(BROKER_OPTS), "kafka.Kafka", str(self.config)], self.log)
        direct = self.direct_bootstrap
        try:
            wait_ready(
                "kafka",
                lambda: self._ready(direct),
                timeout=self.start_timeout,
                log=self.log,
                process=self.process,
            )
        except BaseException:
            self.stop()
            raise
        return self.running(self.bootstrap)

    def _ready(self, direct: str) -> None:
        """Cheap TCP probe first: ``check`` on a closed port would wait out its whole timeout."""
        host, _, port = direct.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=1):
            pass
        self.check(direct)

    def _java(self, opts: tuple[str, ...]) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ServiceError("kafka: java is not installed (Java 17 or later is needed)")
        return [
            java,
            *JAVA_OPTS,
            *opts,
            f"-Dlog4j2.configurationFile={self.log4j}",
            "-cp",
            f"{self.libs}/*",
        ]

    def _properties(self) -> str:
        controller = f"CONTROLLER://127.0.0.1:{self.controller_port}"
        plaintext = f"PLAINTEXT://127.0.0.1:{self.port}"
        if self.advertised_port is None:
            listeners = advertised = f"{plaintext},{controller}"
            inter_broker, protocols = "PLAINTEXT", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        else:
            direct = f"DIRECT://127.0.0.1:{self.direct_port}"
            listeners = f"{plaintext},{direct},{controller}"
            advertised = f"PLAINTEXT://127.0.0.1:{self.advertised_port},{direct},{controller}"
            inter_broker = "DIRECT"
            protocols = "PLAINTEXT:PLAINTEXT,DIRECT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": inter_broker,
            "listeners": listeners,
            "advertised.listeners": advertised,
            "listener.security.protocol.map": protocols,
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())


def _another_free_port(taken: set[int | None]) -> int:
    """A free port not among ``taken`` (which it joins): each listener needs its own."""
    port = free_port()
    while port in taken:
        port = free_port()
    taken.add(port)
    return port


def _cluster_id() -> str:
    """A Kafka-style cluster id: URL-safe base64 of a random UUID, not starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text
