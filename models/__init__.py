"""Reference PyTorch SpikingSSM and P-SpikeSSM, SDN neuron, checkpoint format and training command."""
from .config import SpikingSSMConfig
from .neurons import SDN, lif_sequence
from .ssm_kernel import materialize_kernel, ssm_convolution
from .spikingssm import SpikingSSM
from .dplr_kernel import materialize_dplr_kernel
from .pspikessm import PSpikeSSM, PSpikeSSMConfig
from .checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint

__all__ = ["SpikingSSMConfig", "SDN", "lif_sequence", "materialize_kernel", "ssm_convolution", "SpikingSSM",
           "materialize_dplr_kernel", "PSpikeSSM", "PSpikeSSMConfig",
           "CheckpointError", "build_model", "load_checkpoint", "save_checkpoint"]
