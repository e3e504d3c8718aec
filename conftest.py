"""pytest set-up for the whole repository (unit tests and notebooks).

Notebook kernels started by nbval inherit this process's environment, so quick mode and a
headless matplotlib backend set here reach them too.
"""

import os

os.environ.setdefault("DECORR_QUICK", "1")  # notebooks: the small grids (see decorr_lite.settings)
os.environ.setdefault("MPLBACKEND", "Agg")  # no display in CI
