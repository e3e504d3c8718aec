"""pytest set-up for the whole repository (unit tests and notebooks).

Notebook kernels started by nbval inherit this process's environment, so quick mode and a
headless matplotlib backend set here reach them too.
"""

import os

os.environ.setdefault("DECORR_QUICK", "1")  # notebooks: the small grids (see decorr_lite.settings)
os.environ.setdefault("MPLBACKEND", "Agg")  # no display in CI
os.environ.setdefault("DECORR_STRICT", "1")  # notebooks: a failed timing claim fails the test (see decorr_lite._claims)
# The notebooks run from the run bank, with no CIFAR-10 on disk, as on a student's laptop: their
# kernels must not see the data. Tests that need the real images find it in DECORR_TEST_DATA.
if os.environ.get("DECORR_DATA"):
    os.environ.setdefault("DECORR_TEST_DATA", os.environ.pop("DECORR_DATA"))
