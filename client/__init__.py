"""The copy-offload client: the Python libcopyoffload."""
