"""The ``nnf`` driver: copy-offload requests as NnfDataMovement resources (see ``driver``)."""

from copy_offload.server.nnf.config import NnfSettings, NnfStartupError, missing_environment
from copy_offload.server.nnf.driver import NnfDriver, create_nnf_driver
from copy_offload.server.nnf.kube import KubeSettings

__all__ = ["KubeSettings", "NnfDriver", "NnfSettings", "NnfStartupError", "create_nnf_driver", "missing_environment"]
