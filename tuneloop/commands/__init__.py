"""CLI sub-commands, one module per area, mounted by `tuneloop.cli`."""
