"""The embedded default's Celery broker: kombu's filesystem transport, publishing atomically.

kombu writes a message straight into its final file name, and a consumer may move that file
away and read it before the writer has written a byte; it then fails to decode an empty
payload and the worker stops ("Unrecoverable error: JSONDecodeError"), seen after ~90 minutes
of `make run`. Here a message is written under a name no consumer lists (a dot prefix and a
`.part` suffix) and renamed into place, which is atomic on one file system.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put `payload` onto `queue`: write a hidden part file, then rename it into the queue."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add a message to {self.data_folder_out!r}") from exc


class Transport(filesystem.Transport):
    Channel = Channel
