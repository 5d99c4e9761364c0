"""Test-wide settings."""

import torch

# The test models are tiny: one thread is faster than two, and it keeps OpenMP from spinning against
# whatever else runs on a 2-core machine.
torch.set_num_threads(1)
