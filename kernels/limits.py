"""Numeric limits shared by the kernels, defined once."""

import numpy as np

INT64_MIN = int(np.iinfo(np.int64).min)
INT64_MAX = int(np.iinfo(np.int64).max)
UINT32_MAX = int(np.iinfo(np.uint32).max)
