"""The copy-offload service as a Python broker module (flux-core >= 0.84).

Load with::

    flux module load /path/to/copy_offload/flux/copy-offload.py

(the module name, and so the service name, is the file's basename: ``copy-offload``). The
module runs in its own process (``flux module-python-exec``), so a crash cannot take the broker
down. Config comes from the ``[copy-offload]`` table; ``flux config reload`` re-reads it, and an
invalid table makes the reload fail with the reason. Imports ``flux``: only for Flux's Python.
"""

from __future__ import annotations

import errno

from copy_offload.flux.config import ConfigError, parse_config
from copy_offload.flux.frontend import Frontend
from flux.brokermod import BrokerModule, request_handler


class CopyOffloadModule(BrokerModule):
    """Delegates every request to a Frontend; owns nothing else."""

    def __init__(self, h, *args):
        super().__init__(h, *args)
        if args:
            raise ValueError(f"{self.name}: takes no module arguments (got {' '.join(args)}); "
                             "configure it in the [copy-offload] table")
        try:
            cfg = parse_config(h.conf_get(update=True))
        except ConfigError as exc:
            self.log.error(str(exc))
            raise
        self.frontend = Frontend(h, cfg, self.log)

    @request_handler("prepare", allow_guest=True)
    def prepare(self, msg):
        self.frontend.prepare(msg)

    @request_handler("forget", allow_guest=True)
    def forget(self, msg):
        self.frontend.forget(msg)

    @request_handler("env", allow_guest=True)
    def env(self, msg):
        self.frontend.env(msg)

    @request_handler("stats", allow_guest=True)
    def stats(self, msg):
        self.frontend.stats(msg)

    @request_handler("config-reload")
    def config_reload(self, msg):
        error = self.frontend.reload(msg.payload)
        if error is None:
            self.handle.respond(msg)
        else:
            self.log.error(f"config reload rejected: {error}")
            self.handle.respond_error(msg, errno.EINVAL, error)

    def run(self):
        try:
            super().run()
        finally:
            self.frontend.close()
