#!/usr/bin/env bash
# Download, for a Python 3.12 x86-64 GPU machine that cannot reach a package index,
# the wheels dclust needs beyond what such an image usually holds (CuPy, NumPy, SciPy,
# numba, scikit-learn are expected there). Run here with network access; the folder .whl
# is then carried to the GPU machine and installed with
#   python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
for spec in "dask==2026.8.0" "distributed==2026.8.0" "zarr==3.1.6" "numcodecs==0.16.6" donfig google-crc32c \
            array-api-compat array-api-strict kmedoids partd locket tblib zict tornado importlib_metadata; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl "$spec"
done
ls -la .whl
