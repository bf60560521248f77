"""The embedded broker under a producer and a consumer racing on the same queue folder:
every message arrives whole (kombu's own filesystem transport let a consumer read a file the
producer had created but not yet written, and the worker died on the empty payload; with
transport="filesystem" this test fails within the first few hundred messages)."""

import multiprocessing

from kombu import Connection
from kombu.simple import SimpleQueue

MESSAGES = 3000


def _options(folder) -> dict:
    return {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder),
            "store_processed": False, "polling_interval": 0.001}


def _produce(transport: str, folder: str) -> None:
    with Connection("filesystem://", transport=transport, transport_options=_options(folder)) as connection:
        queue = SimpleQueue(connection, "race")
        for number in range(MESSAGES):
            queue.put({"number": number, "padding": "x" * 2000})


def _race(transport: str, folder) -> tuple[list[int], list[str]]:
    received, errors = [], []
    producer = multiprocessing.get_context("fork").Process(target=_produce, args=(transport, str(folder)))
    with Connection("filesystem://", transport=transport, transport_options=_options(folder)) as connection:
        queue = SimpleQueue(connection, "race")
        producer.start()
        while len(received) + len(errors) < MESSAGES:
            try:
                message = queue.get(timeout=10)
            except queue.Empty:
                break
            except ValueError as exc:  # JSONDecodeError: a half-written file was read
                errors.append(type(exc).__name__)
                continue
            received.append(message.payload["number"])
            message.ack()
    producer.join(timeout=30)
    return received, errors


def test_every_message_arrives_whole_while_producer_and_consumer_race(tmp_path):
    received, errors = _race("cdp.broker:Transport", tmp_path)
    assert errors == []
    assert sorted(received) == list(range(MESSAGES))
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".part")] == []



def test_the_apps_filesystem_broker_is_the_atomic_one_and_other_urls_keep_their_transport():
    from cdp.celery import app

    with app.connection_for_write("filesystem://") as connection:
        assert connection.transport.Channel.__module__ == "cdp.broker"
    with app.connection_for_write("redis://127.0.0.1:1/0") as connection:
        assert connection.transport.driver_name == "redis"
