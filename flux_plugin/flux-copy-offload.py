"""``flux copy-offload``: flux-core runs ``flux-<name>.py`` files found in its command path."""

from copy_offload.flux.cli import main

main()
