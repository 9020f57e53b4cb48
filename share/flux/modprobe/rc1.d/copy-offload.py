"""flux-modprobe rc1 addition: start the copy-offload service with the instance.

Install as /etc/flux/modprobe/rc1.d/copy-offload.py next to modprobe.d/copy-offload.toml. The
module entry there is disabled unless the config has a [copy-offload] table. rc3 removes
the module with the others.
"""


def setup(context):
    context.load_modules(["copy-offload"])
