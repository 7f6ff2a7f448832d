"""Graph -> graph passes, each a plain function; ``neurocompile.pipeline`` runs them in order."""
from .align import align_time_steps
from .check_lowerable import check_lowerable
from .fold import fold_channel_affines
from .materialize import materialize_kernels
from .quantize import quantize
from .ranges import analyze_ranges
from .replace_sdn import replace_sdn_with_lif

__all__ = ["check_lowerable", "replace_sdn_with_lif", "materialize_kernels", "fold_channel_affines", "quantize",
           "analyze_ranges", "align_time_steps"]
