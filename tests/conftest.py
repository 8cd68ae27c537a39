import os
import sys

import matplotlib

matplotlib.use("Agg")
sys.path.insert(0, os.path.dirname(__file__))
torch_threads = os.environ.get("CAPTUM_SPES_TEST_THREADS")
if torch_threads:
    import torch

    torch.set_num_threads(int(torch_threads))
