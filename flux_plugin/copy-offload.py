"""Loader shim: ``flux module load <dir>/copy-offload.py`` names the module ``copy-offload``.

flux-core's Python module loader takes the one BrokerModule subclass it finds here.
"""

from copy_offload.flux.brokermod import CopyOffloadModule  # noqa: F401
