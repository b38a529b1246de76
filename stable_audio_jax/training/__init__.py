"""Train state, tasks, generic trainer loop, checkpointing."""
