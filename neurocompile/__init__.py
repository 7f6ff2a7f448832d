"""neurocompile: trained spiking state-space models -> integer Loihi 2 programs run by Lava."""
__version__ = "0.1.0"
