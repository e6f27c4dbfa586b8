#!/usr/bin/env bash
# Sets up the package and shows the topology core on a real GPU model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mig-extender profiles --gpu NVIDIA-H200
mig-extender layouts --gpu A100-40GB --profiles 1g.5gb,2g.10gb,3g.20gb,4g.20gb,7g.40gb
