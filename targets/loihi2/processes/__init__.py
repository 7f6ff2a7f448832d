"""Our own Lava processes: one module each, Process + its fixed_pt and floating_pt models.

Nothing here runs at import time except class definitions (Lava's model search imports every
module of this folder)."""
