#!/usr/bin/env bash
# The main job: make a 2,000,000 x 32 dataset (256 MB), cluster it with k-means on the
# embedded local Dask cluster, write labels and model, and show what was made.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
out="${DEMO_DIR:-demo-data}"
mkdir -p "$out"
n="${DEMO_SAMPLES:-2000000}"
set -x
dclust make-blobs "$out/blobs.zarr" --n-samples "$n" --n-features 32 --centers 16 --seed 0 --overwrite
dclust fit kmeans "$out/blobs.zarr" -k 16 --seed 0 --model "$out/kmeans.npz" --labels "$out/labels.zarr" --overwrite
dclust info "$out/kmeans.npz"
dclust info "$out/labels.zarr"
