"""Loihi 2 target: lowering of a Program to Lava processes and its runtime."""
